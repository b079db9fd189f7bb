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
mod tests {
    use super::*;
    use crate::ErrorCode;
    use crate::event::PresenceStatus;
    use crate::frame::Reply;
    use crate::model::{Message, MessageKind};

    fn sample_message() -> Message {
        Message {
            id: 7,
            chat_id: 3,
            seq: 1,
            sender_id: 1,
            kind: MessageKind::Text,
            text: Some("héllo".into()),
            attachment: None,
            reply_to_id: None,
            client_msg_id: "c1".into(),
            created_at: crate::time::now_millis(),
            edited_at: None,
            deleted_at: None,
        }
    }

    #[test]
    fn receipt_edit_and_delete_frames_decode_in_both_formats() {
        let frames: [(&[u8], ClientFrame); 3] = [
            (
                br#"{"type":"delivered","id":"r3","chat_id":5,"up_to_seq":9}"#,
                ClientFrame::Delivered {
                    id: Some(RequestId::Text("r3".into())),
                    chat_id: 5,
                    up_to_seq: 9,
                },
            ),
            (
                br#"{"type":"edit","id":"r4","chat_id":5,"message_id":70,"text":"fixed"}"#,
                ClientFrame::Edit {
                    id: Some(RequestId::Text("r4".into())),
                    chat_id: 5,
                    message_id: 70,
                    text: "fixed".into(),
                },
            ),
            (
                br#"{"type":"delete","id":"r5","chat_id":5,"message_id":70}"#,
                ClientFrame::Delete {
                    id: Some(RequestId::Text("r5".into())),
                    chat_id: 5,
                    message_id: 70,
                },
            ),
        ];
        for (raw, expected) in frames {
            let frame = WireFormat::Json.decode_client_frame(raw).expect("valid");
            assert_eq!(frame, expected);
            let packed = rmp_serde::to_vec_named(&frame).expect("encodes");
            assert_eq!(
                WireFormat::MsgPack
                    .decode_client_frame(&packed)
                    .expect("valid"),
                expected
            );
        }
        let negative = WireFormat::Json
            .decode_client_frame(br#"{"type":"delivered","id":"r6","chat_id":5,"up_to_seq":-1}"#)
            .expect_err("a negative watermark is refused");
        assert_eq!(negative.request_id(), Some(RequestId::Text("r6".into())));
    }

    #[test]
    fn updated_and_delivered_events_have_the_contract_shape() {
        let mut message = sample_message();
        message.text = None;
        message.deleted_at = Some(crate::time::now_millis());
        let updated = ServerEvent::MessageUpdated {
            message,
            cursor: "c9".into(),
        };
        for format in [WireFormat::Json, WireFormat::MsgPack] {
            let raw = format.encode(&updated);
            let value: serde_json::Value = match format {
                WireFormat::Json => serde_json::from_slice(&raw).expect("json"),
                WireFormat::MsgPack => rmp_serde::from_slice(&raw).expect("msgpack"),
            };
            assert_eq!(value["type"], "message_updated");
            assert!(value["message"]["text"].is_null());
            assert!(value["message"]["edited_at"].is_null());
            assert!(value["message"]["deleted_at"].is_string());
            assert_eq!(value["cursor"], "c9");
        }
        let delivered = ServerEvent::MessageDelivered {
            chat_id: 3,
            user_id: 4,
            up_to_seq: 5,
            cursor: "c1".into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&WireFormat::Json.encode(&delivered)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"message_delivered","chat_id":3,"user_id":4,"up_to_seq":5,"cursor":"c1"})
        );
        let envelope = BusEnvelope::new(BusBody::Event(updated));
        assert_eq!(
            BusEnvelope::decode(&envelope.encode()).expect("decodes"),
            envelope
        );
    }

    #[test]
    fn messages_without_the_new_fields_still_decode() {
        let old = serde_json::json!({"id":1,"chat_id":2,"seq":3,"sender_id":4,"type":"text",
            "text":"hi","attachment":null,"reply_to_id":null,"client_msg_id":"a",
            "created_at":"2026-11-24T08:29:18.123Z"});
        let message: Message = serde_json::from_value(old).expect("decodes");
        assert_eq!((message.edited_at, message.deleted_at), (None, None));
    }

    #[test]
    fn json_event_has_the_contract_shape() {
        let event = ServerEvent::NewMessage {
            message: sample_message(),
            cursor: "c1".into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&WireFormat::Json.encode(&event)).expect("valid json");
        assert_eq!(json["type"], "new_message");
        assert_eq!(json["message"]["type"], "text");
        assert_eq!(json["message"]["seq"], 1);
        assert_eq!(json["cursor"], "c1");
        assert!(json["message"]["attachment"].is_null());
        let created = json["message"]["created_at"].as_str().expect("string");
        assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    }

    #[test]
    fn msgpack_event_is_a_map_with_the_same_keys() {
        let event = ServerEvent::Presence {
            user_id: 9,
            status: PresenceStatus::Offline,
            last_seen: None,
        };
        let raw = WireFormat::MsgPack.encode(&event);
        let as_json: serde_json::Value = rmp_serde::from_slice(&raw).expect("msgpack map");
        assert_eq!(as_json["type"], "presence");
        assert_eq!(as_json["status"], "offline");
        assert!(as_json["last_seen"].is_null());
    }

    #[test]
    fn bus_envelope_round_trips() {
        let envelope = BusEnvelope::new(BusBody::Event(ServerEvent::NewMessage {
            message: sample_message(),
            cursor: "c1".into(),
        }));
        let decoded = BusEnvelope::decode(&envelope.encode()).expect("decodes");
        assert_eq!(decoded, envelope);
        let revoked = BusEnvelope::new(BusBody::SessionRevoked { jti: "j".into() });
        assert_eq!(
            BusEnvelope::decode(&revoked.encode()).expect("decodes"),
            revoked
        );
    }

    #[test]
    fn client_frames_decode_in_both_formats() {
        let json = br#"{"type":"send","id":"r1","chat_id":5,"client_msg_id":"a","text":"hi"}"#;
        let frame = WireFormat::Json.decode_client_frame(json).expect("valid");
        assert!(matches!(frame, ClientFrame::Send { chat_id: 5, .. }));
        let packed = rmp_serde::to_vec_named(&frame).expect("encodes");
        assert_eq!(
            WireFormat::MsgPack
                .decode_client_frame(&packed)
                .expect("valid"),
            frame
        );
    }

    /// Good frames skip the tree; the answer must be the one the tree gives, for every frame.
    #[test]
    fn the_direct_decode_agrees_with_the_tree() {
        let frames: [&[u8]; 12] = [
            br#"{"type":"send","id":"r1","chat_id":5,"client_msg_id":"a","text":"hi"}"#,
            br#"{"chat_id":5,"text":"hi","client_msg_id":"a","type":"send","reply_to_id":9}"#,
            br#"{"type":"send","chat_id":5,"client_msg_id":"a","text":"one","text":"two"}"#,
            br#"{"type":"send","chat_id":5,"client_msg_id":"a","text":"hi","extra":[1,{"x":2}]}"#,
            br#"{"type":"send","chat_id":-5,"client_msg_id":"a","text":"hi"}"#,
            br#"{"type":"send","chat_id":5.0,"client_msg_id":"a","text":"hi"}"#,
            br#"{"type":"read","id":7,"chat_id":5,"up_to_seq":18446744073709551615}"#,
            br#"{"type":"ping","id":null}"#,
            br#"{"type":"auth","token":"t","since":null}"#,
            br#"{"type":"typing","type":"read","chat_id":1,"up_to_seq":2}"#,
            br#"{"type":"resume"}"#,
            br#"{"type":"Send","chat_id":5,"client_msg_id":"a","text":"hi"}"#,
        ];
        for raw in frames {
            let direct = WireFormat::Json.decode_client_frame(raw).ok();
            let tree = serde_json::from_slice(raw)
                .ok()
                .and_then(|value| frame_from_value(value).ok());
            assert_eq!(direct, tree, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn bad_frames_give_errors_that_keep_the_request_id() {
        let err = WireFormat::Json
            .decode_client_frame(br#"{"type":"send","id":"r9","chat_id":"x"}"#)
            .expect_err("bad shape");
        assert_eq!(err.request_id(), Some(RequestId::Text("r9".into())));
        let err = WireFormat::Json
            .decode_client_frame(br#"{"type":"dance","id":4}"#)
            .expect_err("unknown type");
        assert_eq!(err.request_id(), Some(RequestId::Number(4)));
        assert!(WireFormat::Json.decode_client_frame(b"{nope").is_err());
        assert!(WireFormat::Json.decode_client_frame(b"[]").is_err());
        assert!(WireFormat::MsgPack.decode_client_frame(&[0xc1]).is_err());
    }

    #[test]
    fn error_reply_shape() {
        let reply = Reply::error(
            Some(RequestId::Text("r1".into())),
            ErrorCode::NotFound,
            "no such chat",
        );
        let json: serde_json::Value =
            serde_json::from_slice(&WireFormat::Json.encode(&reply)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"error","id":"r1","code":"not_found","message":"no such chat"})
        );
    }
}
