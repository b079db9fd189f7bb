//! Attachments on MySQL: the rows describing uploaded files, and who may read them.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::now_millis;

use super::MySqlBackend;
use crate::Result;
use crate::attachments::{AttachmentQueries, AttachmentRecord, COLUMNS, Row, from_row};

#[async_trait]
impl AttachmentQueries for MySqlBackend {
    async fn create_attachment(
        &self,
        uploader: Id,
        object_key: &str,
        size: u64,
        content_type: &str,
        sha256: &str,
    ) -> Result<AttachmentRecord> {
        let done = sqlx::query(
            "INSERT INTO attachments (uploader_id, object_key, size, content_type, sha256, \
             created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(uploader)
        .bind(object_key)
        .bind(size)
        .bind(content_type)
        .bind(sha256)
        .bind(now_millis().naive_utc())
        .execute(&self.pool)
        .await?;
        Ok(AttachmentRecord {
            id: done.last_insert_id(),
            uploader_id: uploader,
            object_key: object_key.to_string(),
            size,
            content_type: content_type.to_string(),
            sha256: sha256.to_string(),
        })
    }

    async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND a.uploader_id = ?"
        ))
        .bind(id)
        .bind(uploader)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(from_row))
    }

    async fn readable_attachment(&self, reader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND (a.uploader_id = ? OR EXISTS \
             (SELECT 1 FROM messages m JOIN chat_members cm \
              ON cm.chat_id = m.chat_id AND cm.user_id = ? WHERE m.attachment_id = a.id))"
        ))
        .bind(id)
        .bind(reader)
        .bind(reader)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(from_row))
    }
}
