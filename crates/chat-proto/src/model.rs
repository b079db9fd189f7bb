//! Objects that appear in HTTP bodies and in events.

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: Id,
    pub username: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Private,
    Group,
}

impl ChatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Group => "group",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "private" => Some(Self::Private),
            "group" => Some(Self::Group),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    File,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "text" => Some(Self::Text),
            "image" => Some(Self::Image),
            "file" => Some(Self::File),
            _ => None,
        }
    }
}

/// Metadata of an uploaded file, carried inside image and file messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: Id,
    pub url: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
}

impl Attachment {
    /// Where clients download an attachment: a path on chat-api.
    pub fn url_for(id: Id) -> String {
        format!("/v1/attachments/{id}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Id,
    pub chat_id: Id,
    pub seq: u64,
    pub sender_id: Id,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub text: Option<String>,
    pub attachment: Option<Attachment>,
    pub reply_to_id: Option<Id>,
    pub client_msg_id: String,
    #[serde(with = "crate::time")]
    pub created_at: Timestamp,
    /// When its sender last changed the text (null: never).
    #[serde(default, with = "crate::time::option")]
    pub edited_at: Option<Timestamp>,
    /// When it was deleted (null: it was not); a deleted message is a tombstone that keeps its
    /// `seq`, with `text` and `attachment` null.
    #[serde(default, with = "crate::time::option")]
    pub deleted_at: Option<Timestamp>,
}

impl Message {
    /// When it last changed after it was sent (an edit or its deletion), if ever: the time of
    /// its latest `message_updated` event.
    pub fn updated_at(&self) -> Option<Timestamp> {
        self.deleted_at.or(self.edited_at)
    }
}

/// Body of `POST /v1/chats/{id}/messages`; the gateway builds it from a `send` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub client_msg_id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<Id>,
}

/// Body of `PATCH /v1/chats/{id}/messages/{message_id}`; the gateway builds it from an `edit`
/// frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditMessageRequest {
    pub text: String,
}

/// Body of `POST /v1/chats/{id}/read` and `POST /v1/chats/{id}/delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkRequest {
    pub up_to_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Owner,
    Member,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Self {
        if raw == "owner" {
            Self::Owner
        } else {
            Self::Member
        }
    }
}

/// A chat member. `id` and `user_id` both hold the member's user id, so clients that expect
/// either spelling work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: Id,
    pub user_id: Id,
    pub username: String,
    pub role: MemberRole,
    pub last_read_seq: u64,
    /// Up to where a device of the member has the chat's messages; never below `last_read_seq`
    /// (reading implies delivery).
    #[serde(default)]
    pub last_delivered_seq: u64,
    #[serde(with = "crate::time")]
    pub joined_at: Timestamp,
}

/// A chat as one member sees it (`pinned`, `archived`, `unread_count` are that member's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: Id,
    #[serde(rename = "type")]
    pub kind: ChatKind,
    pub title: Option<String>,
    pub members: Vec<Member>,
    pub last_message: Option<Message>,
    pub unread_count: u64,
    pub pinned: bool,
    pub archived: bool,
    #[serde(with = "crate::time")]
    pub created_at: Timestamp,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub user: UserRef,
    pub online: bool,
    #[serde(with = "crate::time::option")]
    pub last_seen: Option<Timestamp>,
}

/// `GET /v1/users/me`: the user with private fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: Id,
    pub username: String,
    pub email: Option<String>,
    #[serde(with = "crate::time")]
    pub created_at: Timestamp,
}

/// `{"message": {...}}`: the body of a send's answer, read back by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    pub message: Message,
}
