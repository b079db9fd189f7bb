//! The frames of docs/protocol.md that the driver reads and writes. A server frame is parsed
//! into one flat struct of optional, borrowed fields (unknown fields and types are ignored), which
//! costs far less than a tagged enum or a `serde_json::Value`; client frames are formatted
//! directly.

use std::borrow::Cow;

use serde::Deserialize;

/// Any frame from the gateway, flattened: which fields are present depends on `kind`.
#[derive(Debug, Deserialize)]
pub struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The request id echoed by `ack` and `error`.
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// `new_message`, `message_read`, `synced`.
    #[serde(default, borrow)]
    pub cursor: Option<Cow<'a, str>>,
    /// `new_message`, and `ack` of a send (an `error` frame's `message` is its text: `None`).
    #[serde(default, borrow, deserialize_with = "message_or_text")]
    pub message: Option<Message<'a>>,
    /// `auth_ok`.
    #[serde(default)]
    pub user_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    pub chat_id: u64,
    pub seq: u64,
    pub sender_id: u64,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub client_msg_id: Option<Cow<'a, str>>,
}

impl Message<'_> {
    /// The send time the driver put in the text: microseconds since the Unix epoch.
    pub fn sent_at_us(&self) -> Option<u64> {
        self.text.as_deref().and_then(|t| t.parse().ok())
    }
}

/// A chat message object, or `None` for the human text of an error frame.
fn message_or_text<'de: 'a, 'a, D>(d: D) -> Result<Option<Message<'a>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visit<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
        type Value = Option<Message<'a>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a message object or a string")
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            Message::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(Visit(std::marker::PhantomData))
}

pub fn parse(bytes: &[u8]) -> Result<ServerFrame<'_>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Characters JSON needs escaped never occur in tokens (base64url and dots) or cursors.
pub fn auth(token: &str) -> String {
    format!(r#"{{"type":"auth","token":"{token}"}}"#)
}

pub fn resume(since: &str) -> String {
    format!(r#"{{"type":"resume","since":"{since}"}}"#)
}

pub fn ping() -> &'static str {
    r#"{"type":"ping"}"#
}

/// A `send` whose text is the send time in microseconds since the epoch.
pub fn send(id: &str, chat_id: u64, client_msg_id: &str, sent_at_us: u64) -> String {
    format!(
        r#"{{"type":"send","id":"{id}","chat_id":{chat_id},"client_msg_id":"{client_msg_id}","text":"{sent_at_us}"}}"#
    )
}

#[cfg(test)]
mod tests;
