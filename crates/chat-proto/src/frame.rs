//! WebSocket frames: what clients send, and the direct replies the gateway gives (events are in
//! `event`).

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::error::ErrorCode;
use crate::model::Message;

/// The client's request id, echoed back in `ack` and `error`. The contract uses strings; numbers
/// are accepted too and echoed unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Text(String),
    Number(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        token: String,
        /// Resume from this cursor right after authenticating.
        #[serde(default)]
        since: Option<String>,
    },
    Resume {
        since: String,
    },
    Ping {
        #[serde(default)]
        id: Option<RequestId>,
    },
    Send {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: Id,
        client_msg_id: String,
        text: String,
        #[serde(default)]
        reply_to_id: Option<Id>,
    },
    Read {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: Id,
        up_to_seq: u64,
    },
    Typing {
        chat_id: Id,
    },
    /// A device of the user has the chat's messages up to `up_to_seq`.
    Delivered {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: Id,
        up_to_seq: u64,
    },
    /// The sender changes a message's text.
    Edit {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: Id,
        message_id: Id,
        text: String,
    },
    /// The sender (or a group's owner) deletes a message.
    Delete {
        #[serde(default)]
        id: Option<RequestId>,
        chat_id: Id,
        message_id: Id,
    },
}

/// Frames the gateway sends in answer to the client (as opposed to bus events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    AuthOk {
        user_id: Id,
        session_id: String,
    },
    Pong {
        ts: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<Message>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
}

impl Reply {
    pub fn error(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            id,
            code,
            message: message.into(),
        }
    }
}
