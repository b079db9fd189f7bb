//! Attachments: upload a file as the raw request body (or the `file` field of a multipart form),
//! download it (with Range) if you uploaded
//! it or are a member of a chat where it was sent. Non-readers get 404, never 403.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_proto::{Attachment, ErrorCode};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, parse_id};
use crate::state::AppState;
use crate::storage::{Incoming, RangeRequest, Storage, StorageError, append, parse_range, sniff};

/// Bytes kept from the start of an upload for sniffing its type.
const SNIFF_BYTES: usize = 8192;

/// How much of a refused upload is read and thrown away before the 413 goes out, and for how
/// long. A client still writing its body when the server closes the connection gets a reset
/// instead of the answer, so an app would show a network error, not "file too large". Beyond
/// these bounds the answer goes out at once.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!("the file is larger than {max} bytes"),
    )
}

fn storage_error(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "attachment storage failed");
    ApiError::unavailable("attachment storage is unavailable, retry later")
}

fn storage(state: &AppState) -> ApiResult<&Storage> {
    state
        .storage
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("attachment storage is not configured"))
}

/// What was received of an upload: the temporary file (removed when dropped) and its facts.
struct Received {
    incoming: Incoming,
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

/// Streams one body (or one multipart field) into a temporary file, counting against the limit,
/// hashing and keeping the first bytes for sniffing.
async fn receive<S, E>(storage: &Storage, mut stream: S) -> ApiResult<Received>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let max = storage.max_bytes;
    // The temporary file is removed when `incoming` drops: on 413, a broken body, an error, or
    // the client hanging up (the handler is then dropped mid-stream).
    let (incoming, mut file) = storage.incoming().await.map_err(storage_error)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid(format!("reading the body failed: {e}")))?;
        size += chunk.len() as u64;
        if size > max {
            metrics::counter!("chat_attachments_rejected_total", "reason" => "too_large")
                .increment(1);
            drain(&mut stream).await;
            return Err(too_large(max));
        }
        hasher.update(&chunk);
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        append(&mut file, &chunk).await.map_err(storage_error)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|e| storage_error(e.into()))?;
    Ok(Received {
        incoming,
        size,
        sha256: hex::encode(hasher.finalize()),
        head,
    })
}

/// Reads and discards the rest of a refused body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain<S, E>(stream: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let discard = async {
        let mut discarded: u64 = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            discarded += chunk.len() as u64;
            if discarded > DRAIN_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// The file of a multipart/form-data upload: the field named `file`, else the first field with
/// a file name. Other fields are skipped (and count against the limit, so they cannot be huge).
async fn receive_multipart(storage: &Storage, mut multipart: Multipart) -> ApiResult<Received> {
    let mut skipped: u64 = 0;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}")))?
            .ok_or_else(|| ApiError::invalid("the multipart body has no `file` field"))?;
        if field.name() == Some("file") || field.file_name().is_some() {
            let received = receive(storage, field).await;
            if received.is_err() {
                // The answer must not race the client's writing of the fields after this one.
                let rest = async {
                    while let Ok(Some(mut field)) = multipart.next_field().await {
                        drain(&mut field).await;
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, rest).await;
            }
            return received;
        }
        let mut field = field;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}")))?
        {
            skipped += chunk.len() as u64;
            if skipped > SNIFF_BYTES as u64 {
                return Err(ApiError::invalid(
                    "multipart fields before `file` are too large",
                ));
            }
        }
    }
}

pub async fn upload(
    State(state): State<AppState>,
    caller: AuthUser,
    request: Request,
) -> ApiResult<(StatusCode, Json<Attachment>)> {
    let storage = storage(&state)?.clone();
    let max = storage.max_bytes;
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    // A multipart body carries some framing around the file; allow for it in the early check.
    let slack = if is_multipart { 64 * 1024 } else { 0 };
    if let Some(declared) = declared.filter(|len| *len > max + slack) {
        metrics::counter!("chat_attachments_rejected_total", "reason" => "too_large").increment(1);
        // A client that asked to continue sends nothing until it hears back; any other is
        // already sending the body, so it is read away first (within bounds).
        let waits_to_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits_to_continue && declared <= DRAIN_BYTES {
            drain(&mut request.into_body().into_data_stream()).await;
        }
        return Err(too_large(max));
    }
    let received = if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        receive_multipart(&storage, multipart).await?
    } else {
        receive(&storage, request.into_body().into_data_stream()).await?
    };
    if received.size == 0 {
        return Err(ApiError::invalid("the file is empty"));
    }
    let content_type = sniff(&received.head);
    let name = format!("{:032x}", rand::random::<u128>());
    let key = format!("{}/{name}", &name[..2]);
    let store = state.store.clone();
    let uploader = caller.id;
    let size = received.size;
    // A task of its own: once the bytes are in, a hang-up must not leave an object without its
    // row (or the other way round).
    let record = tokio::spawn(async move {
        let Received {
            incoming, sha256, ..
        } = received;
        storage
            .put_file(&key, incoming.path())
            .await
            .map_err(storage_error)?;
        drop(incoming);
        match store
            .create_attachment(uploader, &key, size, content_type, &sha256)
            .await
        {
            Ok(record) => Ok(record),
            Err(e) => {
                if let Err(e) = storage.delete(&key).await {
                    tracing::error!(error = %e, key = %key, "removing an orphaned attachment failed");
                }
                Err(ApiError::from(e))
            }
        }
    })
    .await
    .map_err(|_| ApiError::internal())??;
    metrics::counter!("chat_attachments_uploaded_total").increment(1);
    metrics::counter!("chat_attachments_uploaded_bytes_total").increment(size);
    Ok((StatusCode::CREATED, Json(record.public())))
}

pub async fn download(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let storage = storage(&state)?;
    let id = parse_id(&id)?;
    let record = state
        .store
        .readable_attachment(caller.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("attachment"))?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, record.size) {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, Some((start, end))),
        RangeRequest::Unsatisfiable => {
            let mut response = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!(
                    "the range is malformed or outside the file of {} bytes",
                    record.size
                ),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", record.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let stream = storage
        .get(
            &record.object_key,
            range.map(|(start, end)| (start, end + 1)),
        )
        .await
        .map_err(storage_error)?;
    let length = range.map_or(record.size, |(start, end)| end - start + 1);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let out = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, record.content_type.clone());
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::ETAG, format!("\"{}\"", record.sha256));
    set(
        header::CACHE_CONTROL,
        "private, max-age=31536000, immutable".into(),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    if !record.content_type.starts_with("image/") {
        set(header::CONTENT_DISPOSITION, "attachment".into());
    }
    if let Some((start, end)) = range {
        set(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{}", record.size),
        );
    }
    Ok(response)
}
