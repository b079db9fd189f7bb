//! Attachments: the rows describing uploaded files, and who may read them (the uploader, and the
//! members of every chat where a message carries the attachment).

use chat_proto::time::now_millis;
use chat_proto::{Attachment, Id};

use crate::{Result, Store};

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

pub(crate) type Row = (u64, u64, String, u64, String, String);

pub(crate) fn from_row(
    (id, uploader_id, object_key, size, content_type, sha256): Row,
) -> AttachmentRecord {
    AttachmentRecord {
        id,
        uploader_id,
        object_key,
        size,
        content_type,
        sha256,
    }
}

pub(crate) const COLUMNS: &str =
    "a.id, a.uploader_id, a.object_key, a.size, a.content_type, a.sha256";

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
        let pool = mysql_or_sqlite!(
            self,
            create_attachment(uploader, object_key, size, content_type, sha256)
        );
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
        .execute(pool)
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

    /// The attachment if `uploader` uploaded it (what a sender may reference in a message).
    pub async fn own_attachment(&self, uploader: Id, id: Id) -> Result<Option<AttachmentRecord>> {
        let pool = mysql_or_sqlite!(self, own_attachment(uploader, id));
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND a.uploader_id = ?"
        ))
        .bind(id)
        .bind(uploader)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(from_row))
    }

    /// The attachment if `reader` uploaded it or is a member of a chat where it was sent.
    pub async fn readable_attachment(
        &self,
        reader: Id,
        id: Id,
    ) -> Result<Option<AttachmentRecord>> {
        let pool = mysql_or_sqlite!(self, readable_attachment(reader, id));
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM attachments a WHERE a.id = ? AND (a.uploader_id = ? OR EXISTS \
             (SELECT 1 FROM messages m JOIN chat_members cm \
              ON cm.chat_id = m.chat_id AND cm.user_id = ? WHERE m.attachment_id = a.id))"
        ))
        .bind(id)
        .bind(reader)
        .bind(reader)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(from_row))
    }
}
