//! Users: registration, credential lookup, search, and `last_seen`.

use chat_proto::time::{Timestamp, now_millis};
use chat_proto::{Id, Me, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use crate::error::is_duplicate_of;
use crate::seen_batch::SeenBatcher;
use crate::{Result, Store, StoreError};

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

impl Store {
    pub async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef> {
        let pool = mysql_or_sqlite!(self, create_user(username, email, password_hash));
        let inserted = sqlx::query(
            "INSERT INTO users (username, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(username)
        .bind(email)
        .bind(password_hash)
        .bind(now_millis().naive_utc())
        .execute(pool)
        .await;
        match inserted {
            Ok(done) => Ok(UserRef {
                id: done.last_insert_id(),
                username: username.to_string(),
            }),
            Err(e) if is_duplicate_of(&e, "uq_users_username") => {
                Err(StoreError::Conflict("username is taken"))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let pool = mysql_or_sqlite!(self, credentials(username));
        let row: Option<(u64, String, String)> =
            sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(id, username, password_hash)| Credentials {
            user: UserRef { id, username },
            password_hash,
        }))
    }

    pub async fn me(&self, user_id: Id) -> Result<Me> {
        let pool = mysql_or_sqlite!(self, me(user_id));
        let (id, username, email, created_at): (u64, String, Option<String>, NaiveDateTime) =
            sqlx::query_as("SELECT id, username, email, created_at FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_one(pool)
                .await?;
        Ok(Me {
            id,
            username,
            email,
            created_at: created_at.and_utc(),
        })
    }

    /// Users whose name starts with `prefix` (already lower-cased by the caller).
    pub async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        let pool = mysql_or_sqlite!(self, search_users(prefix, limit));
        let pattern = format!("{}%", escape_like(prefix));
        let rows: Vec<(u64, String)> = sqlx::query_as(
            "SELECT id, username FROM users WHERE username LIKE ? ORDER BY username LIMIT ?",
        )
        .bind(pattern)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, username)| UserRef { id, username })
            .collect())
    }

    pub async fn user_exists(&self, user_id: Id) -> Result<bool> {
        let pool = mysql_or_sqlite!(self, user_exists(user_id));
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
        Ok(row.is_some())
    }

    /// A user's first socket anywhere opened or last one closed: stores `last_seen` and returns
    /// it with everyone who should hear about it (people who have the user as a contact, the
    /// user's own contacts, and the user's chat peers).
    ///
    /// On MySQL, changes that arrive together share one UPDATE and one SELECT
    /// (`crate::seen_batch`), and a change is refused at once with [`StoreError::Busy`] when too
    /// many are already waiting.
    pub async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        let pool = mysql_or_sqlite!(self, mark_seen(user_id));
        self.seen
            .get_or_init(|| SeenBatcher::start(pool.clone()))
            .mark_seen(user_id)
            .await
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
