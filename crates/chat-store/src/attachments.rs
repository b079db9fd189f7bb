//! Attachments: the rows describing uploaded files, and who may read them (the uploader, and the
//! members of every chat where a message carries the attachment).

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Attachment, Id};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, key};
use crate::{Result, Store, StoreError};

/// An attachment row: what clients see plus where the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub id: Id,
    pub uploader_id: Id,
    pub object_key: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
}

impl AttachmentRecord {
    /// The metadata carried by messages and the upload's answer.
    pub fn public(&self) -> Attachment {
        Attachment {
            id: self.id,
            url: Attachment::url_for(self.id),
            size: self.size,
            content_type: self.content_type.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// An [`AttachmentRecord`] as read: `COLUMNS` on `attachments a`.
#[derive(FromRow)]
struct AttachmentRow {
    id: u64,
    uploader_id: u64,
    object_key: String,
    size: u64,
    content_type: String,
    sha256: String,
}

const COLUMNS: &str = "a.id, a.uploader_id, a.object_key, a.size, a.content_type, a.sha256";

impl From<AttachmentRow> for AttachmentRecord {
    fn from(row: AttachmentRow) -> Self {
        Self {
            id: row.id,
            uploader_id: row.uploader_id,
            object_key: row.object_key,
            size: row.size,
            content_type: row.content_type,
            sha256: row.sha256,
        }
    }
}

/// The attachments' part of the backend contract (`crate::backend`), the same SQL on both
/// databases.
#[async_trait]
pub(crate) trait AttachmentQueries {
    async fn create_attachment(
        &self,
        uploader: Id,
        object_key: &str,
        size: u64,
        content_type: &str,
        sha256: &str,
    ) -> Result<AttachmentRecord>;
    async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>>;
    async fn readable_attachment(&self, reader: Id, id: Id) -> Result<Option<AttachmentRecord>>;
}

#[async_trait]
impl<D, DB> AttachmentQueries for D
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> AttachmentRow: FromRow<'r, DB::Row>,
{
    async fn create_attachment(
        &self,
        uploader: Id,
        object_key: &str,
        size: u64,
        content_type: &str,
        sha256: &str,
    ) -> Result<AttachmentRecord> {
        let stored_size = i64::try_from(size)
            .map_err(|_| StoreError::Invalid("the attachment is too large".into()))?;
        let done = sqlx::query(
            "INSERT INTO attachments (uploader_id, object_key, size, content_type, sha256, \
             created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key(uploader))
        .bind(object_key)
        .bind(stored_size)
        .bind(content_type)
        .bind(sha256)
        .bind(Stamp(now_millis()))
        .execute(self.writer())
        .await?;
        Ok(AttachmentRecord {
            id: D::inserted_id(&done)?,
            uploader_id: uploader,
            object_key: object_key.to_string(),
            size,
            content_type: content_type.to_string(),
            sha256: sha256.to_string(),
        })
    }

    async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<AttachmentRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND a.uploader_id = ?"
        ))
        .bind(key(id))
        .bind(key(uploader))
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(AttachmentRecord::from))
    }

    async fn readable_attachment(&self, reader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<AttachmentRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND (a.uploader_id = ? OR EXISTS \
             (SELECT 1 FROM messages m JOIN chat_members cm \
              ON cm.chat_id = m.chat_id AND cm.user_id = ? WHERE m.attachment_id = a.id))"
        ))
        .bind(key(id))
        .bind(key(reader))
        .bind(key(reader))
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(AttachmentRecord::from))
    }
}

impl Store {
    /// Records a stored file.
    pub async fn create_attachment(
        &self,
        uploader: Id,
        object_key: &str,
        size: u64,
        content_type: &str,
        sha256: &str,
    ) -> Result<AttachmentRecord> {
        self.backend
            .create_attachment(uploader, object_key, size, content_type, sha256)
            .await
    }

    /// The attachment if `uploader` uploaded it (what a sender may reference in a message).
    pub async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        self.backend.own_attachment(uploader, id).await
    }

    /// The attachment if `reader` uploaded it or is a member of a chat where it was sent.
    pub async fn readable_attachment(
        &self,
        reader: Id,
        id: Id,
    ) -> Result<Option<AttachmentRecord>> {
        self.backend.readable_attachment(reader, id).await
    }
}
