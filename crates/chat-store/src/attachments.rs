//! Attachments: the rows describing uploaded files, and who may read them (the uploader, and the
//! members of every chat where a message carries the attachment).

use async_trait::async_trait;
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

/// The attachments' part of the backend contract (`crate::backend`).
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
