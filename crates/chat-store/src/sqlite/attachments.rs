//! Attachments on SQLite: the rows describing uploaded files, and who may read them.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::now_millis;

use super::{SqliteBackend, key, time, unsigned};
use crate::attachments::AttachmentQueries;
use crate::attachments::{AttachmentRecord, COLUMNS, Row, from_row};
use crate::{Result, StoreError};

type SqliteRow = (i64, i64, String, i64, String, String);

fn convert((id, uploader_id, object_key, size, content_type, sha256): SqliteRow) -> Result<Row> {
    Ok((
        unsigned(id)?,
        unsigned(uploader_id)?,
        object_key,
        unsigned(size)?,
        content_type,
        sha256,
    ))
}

#[async_trait]
impl AttachmentQueries for SqliteBackend {
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
        .bind(time(now_millis()))
        .execute(&self.writer)
        .await?;
        Ok(AttachmentRecord {
            id: unsigned(done.last_insert_rowid())?,
            uploader_id: uploader,
            object_key: object_key.to_string(),
            size,
            content_type: content_type.to_string(),
            sha256: sha256.to_string(),
        })
    }

    async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<SqliteRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND a.uploader_id = ?"
        ))
        .bind(key(id))
        .bind(key(uploader))
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| convert(row).map(from_row)).transpose()
    }

    async fn readable_attachment(&self, reader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<SqliteRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND (a.uploader_id = ? OR EXISTS \
             (SELECT 1 FROM messages m JOIN chat_members cm \
              ON cm.chat_id = m.chat_id AND cm.user_id = ? WHERE m.attachment_id = a.id))"
        ))
        .bind(key(id))
        .bind(key(reader))
        .bind(key(reader))
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| convert(row).map(from_row)).transpose()
    }
}
