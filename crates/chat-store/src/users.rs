//! Users: registration, credential lookup, search, and `last_seen`.

use async_trait::async_trait;
use chat_proto::time::Timestamp;
use chat_proto::{Id, Me, UserRef};

use crate::{Result, Store};

/// A presence change as stored: its time, and who should hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub last_seen: Timestamp,
    pub audience: Vec<Id>,
}

/// What login needs to check a password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: UserRef,
    pub password_hash: String,
}

/// The users' part of the backend contract (`crate::backend`).
#[async_trait]
pub(crate) trait UserQueries {
    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef>;
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;
    async fn me(&self, user_id: Id) -> Result<Me>;
    async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>>;
    async fn user_exists(&self, user_id: Id) -> Result<bool>;
}

impl Store {
    pub async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef> {
        self.backend
            .create_user(username, email, password_hash)
            .await
    }

    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        self.backend.credentials(username).await
    }

    pub async fn me(&self, user_id: Id) -> Result<Me> {
        self.backend.me(user_id).await
    }

    /// Users whose name starts with `prefix` (already lower-cased by the caller).
    pub async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        self.backend.search_users(prefix, limit).await
    }

    pub async fn user_exists(&self, user_id: Id) -> Result<bool> {
        self.backend.user_exists(user_id).await
    }

    /// A user's first socket anywhere opened or last one closed: stores `last_seen` and returns
    /// it with everyone who should hear about it (people who have the user as a contact, the
    /// user's own contacts, and the user's chat peers).
    ///
    /// On MySQL, changes that arrive together share one UPDATE and one SELECT
    /// (`crate::mysql::seen_batch`), and a change is refused at once with
    /// [`crate::StoreError::Busy`] when too many are already waiting.
    pub async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        self.backend.mark_seen(user_id).await
    }
}

/// Escapes LIKE wildcards (the default escape character is the backslash).
pub(crate) fn escape_like(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(super::escape_like("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
