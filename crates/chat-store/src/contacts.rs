//! Contacts (a one-way list per user) and the audience of a user's presence.

use async_trait::async_trait;
use chat_proto::time::Timestamp;
use chat_proto::{Id, UserRef};

use crate::{Result, Store};

/// The contacts' part of the backend contract (`crate::backend`).
#[async_trait]
pub(crate) trait ContactQueries {
    async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()>;
    async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()>;
    async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>>;
}

impl Store {
    /// Adds `contact_id` to `owner_id`'s contacts; adding twice is fine.
    pub async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        self.backend.add_contact(owner_id, contact_id).await
    }

    pub async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        self.backend.remove_contact(owner_id, contact_id).await
    }

    /// The owner's contacts with their `last_seen`, by username.
    pub async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        self.backend.contacts(owner_id).await
    }
}
