//! Push tokens of users' devices, and what a push notification says about a message.

use async_trait::async_trait;
use chat_proto::Id;

use crate::{Result, Store};

/// Who sent a message and in which chat, for a notification's title.
#[derive(Debug, Clone)]
pub struct PushContext {
    pub sender_username: String,
    /// The group's title; `None` for a private chat.
    pub group_title: Option<String>,
}

impl PushContext {
    /// From the sender's name and the chat's `kind` and `title` columns.
    pub(crate) fn new(sender_username: String, kind: &str, title: Option<String>) -> Self {
        Self {
            sender_username,
            group_title: if kind == "group" { title } else { None },
        }
    }
}

/// The push tokens' part of the backend contract (`crate::backend`).
#[async_trait]
pub(crate) trait PushQueries {
    async fn put_push_token(&self, user: Id, token: &str, platform: Option<&str>) -> Result<()>;
    async fn delete_push_token(&self, user: Id, token: &str) -> Result<()>;
    async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>>;
    async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext>;
}

impl Store {
    /// Registers (or refreshes) a device token for `user`, taking it away from any other user.
    pub async fn put_push_token(
        &self,
        user: Id,
        token: &str,
        platform: Option<&str>,
    ) -> Result<()> {
        self.backend.put_push_token(user, token, platform).await
    }

    /// Removes one token of `user` (no error when it was not registered).
    pub async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        self.backend.delete_push_token(user, token).await
    }

    /// The tokens of each of `users`, as (user, token) pairs ordered by user, then token.
    ///
    /// The api asks for the offline recipients of many messages at once, so `users` can be long:
    /// it is looked up in chunks whose `IN` lists are padded to a few sizes, so that each size
    /// stays one prepared statement on a connection.
    pub async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        self.backend.push_tokens_of(users).await
    }

    /// The sender's username and the chat's title (groups only).
    pub async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        self.backend.push_context(sender, chat_id).await
    }
}
