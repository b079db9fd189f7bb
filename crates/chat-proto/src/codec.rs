//! Encoding and decoding: the two client wire formats, and the MessagePack envelope on the bus.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::event::ServerEvent;
use crate::frame::{ClientFrame, RequestId};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid {format}: {detail}")]
    Syntax {
        format: &'static str,
        detail: String,
    },
    #[error("{detail}")]
    Shape {
        /// The request id, when the frame had a readable one, so the error can echo it.
        id: Option<RequestId>,
        detail: String,
    },
}

impl DecodeError {
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::Syntax { .. } => None,
            Self::Shape { id, .. } => id.clone(),
        }
    }
}

/// How a WebSocket connection encodes its frames: JSON text (default) or MessagePack binary
/// (`?format=msgpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    Json,
    MsgPack,
}

impl WireFormat {
    pub fn encode<T: Serialize>(self, value: &T) -> Bytes {
        match self {
            // Serializing our own types cannot fail: they have string keys and no maps with
            // non-string keys; an empty body is never sent in practice.
            Self::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .unwrap_or_default(),
            Self::MsgPack => rmp_serde::to_vec_named(value)
                .map(Bytes::from)
                .unwrap_or_default(),
        }
    }

    /// Decodes a client frame in two steps so that a frame with a bad shape still yields its
    /// request id for the error reply.
    pub fn decode_client_frame(self, raw: &[u8]) -> Result<ClientFrame, DecodeError> {
        self.decode_client_frame_limited(raw, crate::depth::MAX_JSON_DEPTH)
    }

    /// [`WireFormat::decode_client_frame`] refusing input nested deeper than `max_depth`.
    pub fn decode_client_frame_limited(
        self,
        raw: &[u8],
        max_depth: usize,
    ) -> Result<ClientFrame, DecodeError> {
        let too_deep = || DecodeError::Syntax {
            format: match self {
                Self::Json => "JSON",
                Self::MsgPack => "MessagePack",
            },
            detail: format!("nested deeper than {max_depth} levels"),
        };
        let value: serde_json::Value = match self {
            Self::Json => {
                if crate::depth::json_depth_exceeds(raw, max_depth) {
                    return Err(too_deep());
                }
                // Every frame a client sends comes here: a good one is decoded straight into its
                // type. Only a bad one is read again, as a tree, for the error and its request id.
                if let Ok(frame) = serde_json::from_slice::<ClientFrame>(raw) {
                    return Ok(frame);
                }
                serde_json::from_slice(raw).map_err(|e| DecodeError::Syntax {
                    format: "JSON",
                    detail: e.to_string(),
                })?
            }
            // rmp-serde bounds its own recursion; the tree it built is measured here.
            Self::MsgPack => rmp_serde::from_slice(raw).map_err(|e| DecodeError::Syntax {
                format: "MessagePack",
                detail: e.to_string(),
            })?,
        };
        if crate::depth::value_depth(&value) > max_depth {
            return Err(too_deep());
        }
        frame_from_value(value)
    }
}

fn frame_from_value(value: serde_json::Value) -> Result<ClientFrame, DecodeError> {
    let id = value
        .get("id")
        .and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(DecodeError::Shape {
            id,
            detail: "a frame must be an object with a string field \"type\"".into(),
        });
    };
    if !matches!(
        kind,
        "auth" | "resume" | "ping" | "send" | "read" | "typing" | "delivered" | "edit" | "delete"
    ) {
        return Err(DecodeError::Shape {
            id,
            detail: format!("unknown frame type {kind:?}"),
        });
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Shape {
        id,
        detail: e.to_string(),
    })
}

/// What travels on a bus channel: a user's channel, or a group chat's channel (one publish per
/// event, whatever the number of members; each gateway routes it to the chat's members it holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEnvelope {
    /// When chat-api published it (ms since the Unix epoch): the start of the delivery latency.
    pub published_at_ms: i64,
    pub body: BusBody,
}

// Nearly every body is an event; boxing it would add an allocation to each publish and decode to
// save space only in the rare logout notice.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusBody {
    /// An event for the user's sockets.
    Event(ServerEvent),
    /// The session with this token id logged out: close its sockets with 4001.
    SessionRevoked { jti: String },
    /// On a group chat's channel: an event for the chat's members, but `skip` (the typist of a
    /// `typing`).
    ChatEvent {
        chat_id: u64,
        skip: Option<u64>,
        event: ServerEvent,
    },
    /// Not a client frame: `user_id` became a member of group `chat_id`, whose last message then
    /// was `after_seq` (the member gets messages above it). Published on the chat's channel, in
    /// the chat's send order, and on the added user's channel, so the gateway holding the user
    /// subscribes to the chat.
    MemberAdded {
        chat_id: u64,
        user_id: u64,
        after_seq: u64,
    },
    /// Not a client frame: `user_id` left group `chat_id` (or was removed), in the chat's send
    /// order: gateways stop routing the chat's events to the user before the next one.
    MemberRemoved { chat_id: u64, user_id: u64 },
}

impl BusEnvelope {
    pub fn new(body: BusBody) -> Self {
        Self {
            published_at_ms: chrono::Utc::now().timestamp_millis(),
            body,
        }
    }

    pub fn encode(&self) -> Bytes {
        WireFormat::MsgPack.encode(self)
    }

    pub fn decode(raw: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        decode_msgpack(raw)
    }
}

fn decode_msgpack<T: DeserializeOwned>(raw: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(raw)
}

#[cfg(test)]
mod tests;
