//! Where attachment bytes live: a local directory (default) or an S3-compatible bucket, both
//! behind the `object_store` API. Uploads are first streamed to a local temporary file (counted,
//! hashed, sniffed, and deleted on any failure or cancellation), then copied to the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which backend stores attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A local directory (`CHAT_ATTACHMENTS_DIR`); shared storage if api replicas run on
    /// several hosts.
    Fs,
    /// An S3-compatible bucket (`CHAT_S3_*`, credentials from the usual `AWS_*` variables).
    S3,
}

/// The attachment settings of chat-api.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// fs (a local directory) or s3 (an S3-compatible bucket).
    #[arg(long, env = "CHAT_ATTACHMENTS_STORE", value_enum, default_value = "fs")]
    pub attachments_store: StoreKind,

    /// Directory of stored attachments (fs), and of uploads in progress (both backends).
    #[arg(long, env = "CHAT_ATTACHMENTS_DIR", default_value = "data/attachments")]
    pub attachments_dir: PathBuf,

    /// Largest accepted upload, in bytes (413 beyond).
    #[arg(long, env = "CHAT_ATTACHMENTS_MAX_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub attachments_max_bytes: u64,

    /// Bucket (s3).
    #[arg(long, env = "CHAT_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Endpoint of an S3-compatible service (MinIO, Ceph, R2...); AWS when unset (s3).
    #[arg(long, env = "CHAT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region (s3).
    #[arg(long, env = "CHAT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage configuration: {0}")]
    Config(String),
}

/// A handle on the attachment store; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    incoming: PathBuf,
    pub max_bytes: u64,
}

/// A file being received; removed when dropped unless it was kept.
pub struct Incoming {
    path: PathBuf,
}

impl Incoming {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Synchronous on purpose: it must run even when the request is cancelled.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The range of an object to send, resolved against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) Range header: the whole object.
    Full,
    /// Bytes `start..=end` (inclusive, as in Content-Range).
    Partial { start: u64, end: u64 },
    /// A syntactically broken or unsatisfiable range: 416.
    Unsatisfiable,
}

/// Resolves a `Range` header for an object of `size` bytes. One `bytes=` range is supported
/// (`a-b`, `a-`, `-n`); several ranges are answered with the whole object, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        // RFC 9110 §14.2: a range unit the server does not understand must be ignored.
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match parse(last) {
            Some(n) if n > 0 && size > 0 => (size.saturating_sub(n), size - 1),
            _ => return RangeRequest::Unsatisfiable,
        },
        (false, true) => match parse(first) {
            Some(start) if start < size => (start, size - 1),
            _ => return RangeRequest::Unsatisfiable,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end && start < size => (start, end.min(size - 1)),
            _ => return RangeRequest::Unsatisfiable,
        },
        (true, true) => return RangeRequest::Unsatisfiable,
    };
    RangeRequest::Partial { start, end }
}

/// The content type from the first bytes: images and PDF by their signatures, anything else
/// `application/octet-stream`. What the client claimed is not consulted.
pub fn sniff(head: &[u8]) -> &'static str {
    match infer::get(head) {
        Some(kind) if kind.matcher_type() == infer::MatcherType::Image => kind.mime_type(),
        Some(kind) if kind.mime_type() == "application/pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

impl Storage {
    pub fn new(args: &StorageArgs) -> Result<Self, StorageError> {
        let incoming = args.attachments_dir.join(".incoming");
        std::fs::create_dir_all(&incoming)?;
        let store: Arc<dyn ObjectStore> = match args.attachments_store {
            StoreKind::Fs => Arc::new(LocalFileSystem::new_with_prefix(&args.attachments_dir)?),
            StoreKind::S3 => {
                let bucket = args.s3_bucket.as_deref().ok_or_else(|| {
                    StorageError::Config(
                        "CHAT_S3_BUCKET is required with CHAT_ATTACHMENTS_STORE=s3".into(),
                    )
                })?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&args.s3_region);
                if let Some(endpoint) = &args.s3_endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                Arc::new(builder.build()?)
            }
        };
        Ok(Self {
            store,
            incoming,
            max_bytes: args.attachments_max_bytes,
        })
    }

    /// A new, empty temporary file for an upload.
    pub async fn incoming(&self) -> Result<(Incoming, tokio::fs::File), StorageError> {
        let name = format!("{:032x}", rand::random::<u128>());
        let path = self.incoming.join(name);
        let file = tokio::fs::File::create_new(&path).await?;
        Ok((Incoming { path }, file))
    }

    /// Copies a finished upload into the store under `key` (multipart, so memory stays flat).
    /// A failed copy is aborted, which removes what was written.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        let mut writer = WriteMultipart::new(upload);
        let copied = async {
            let mut file = tokio::fs::File::open(file).await?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await?;
                writer.write(&buf[..n]);
            }
            Ok::<(), StorageError>(())
        }
        .await;
        match copied {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.store.delete(&ObjectPath::from(key)).await?;
        Ok(())
    }

    /// A stream of the bytes `start..end` (exclusive end) of an object, or the whole object.
    pub async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>, StorageError>
    {
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(&ObjectPath::from(key), options).await?;
        Ok(result
            .into_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .boxed())
    }
}

/// Writes a chunk to an upload's temporary file.
pub async fn append(file: &mut tokio::fs::File, chunk: &[u8]) -> Result<(), StorageError> {
    file.write_all(chunk).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{RangeRequest, parse_range, sniff};

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            Partial { start: 0, end: 3 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-4"), 10),
            Partial { start: 6, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-40"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
    }

    #[test]
    fn sniffing_ignores_claims() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(b"<html><script>"), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
    }
}
