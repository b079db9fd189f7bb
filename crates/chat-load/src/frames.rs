//! The frames of docs/protocol.md that the driver reads and writes. A server frame is read into
//! one flat struct of optional, borrowed fields (unknown fields and types are ignored); client
//! frames are formatted directly.
//!
//! Reading the gateway's frames was the largest part of the driver's own instructions (with
//! serde_json, 6,700 instructions a frame, 40% of a churn session's), so [`parse`] first walks
//! the frame with a scanner that only looks at the fields above and skips the rest
//! byte by byte; anything it does not expect (an escape in a string it keeps, a number that is
//! not a plain integer, malformed JSON) sends the frame to serde_json, which gives the same
//! result or the error.

use std::borrow::Cow;

use serde::Deserialize;

/// Any frame from the gateway, flattened: which fields are present depends on `kind`.
#[derive(Debug, PartialEq, Deserialize)]
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

#[derive(Debug, PartialEq, Deserialize)]
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
    match Scan::new(bytes).frame() {
        Some(f) => Ok(f),
        None => serde_json::from_slice(bytes),
    }
}

/// The index of the first byte that ends or escapes a JSON string (a quote, a backslash, a
/// control character), eight bytes at a time as serde_json does.
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(word) = b.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let v = u64::from_le_bytes(word);
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        // Exact for the first flagged byte, which is the one wanted.
        let hit = zero(v ^ (ONES * u64::from(b'"')))
            | zero(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if hit != 0 {
            return Some(at + hit.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|j| at + j)
}

/// The fast reader of [`parse`]: `None` means "not sure", never "invalid".
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The bytes of a string without escapes (keys are compared as bytes, unvalidated).
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let j = special(rest)?;
        if rest[j] != b'"' {
            return None;
        }
        self.i = start + j + 1;
        Some(&rest[..j])
    }

    /// A string without escapes, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.raw_string().and_then(|b| std::str::from_utf8(b).ok())
    }

    fn null(&mut self) -> Option<()> {
        self.ws();
        self.b[self.i..].starts_with(b"null").then(|| self.i += 4)
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.null().map(|()| None)
        } else {
            self.string().map(|s| Some(Cow::Borrowed(s)))
        }
    }

    /// A plain integer (what the protocol's ids and seqs are).
    fn u64(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        // A fraction or exponent is serde_json's to judge.
        let next = self.b.get(self.i).copied();
        (self.i > start && !matches!(next, Some(b'.' | b'e' | b'E'))).then_some(v)
    }

    /// Skips a value of any kind, without judging its contents.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    loop {
                        match *self.b.get(self.i)? {
                            b'"' => break,
                            b'\\' => self.i += 2,
                            _ => self.i += 1,
                        }
                    }
                    self.i += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.i += 1;
                }
                b',' | b':' if depth > 0 => self.i += 1,
                b'}' | b']' | b',' | b':' => return None,
                _ => {
                    let start = self.i;
                    while let Some(c) = self.b.get(self.i) {
                        if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                            break;
                        }
                        self.i += 1;
                    }
                    if self.i == start {
                        return None;
                    }
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
    }

    /// Walks an object, handing each key to `field` with the scanner at its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.raw_string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn frame(mut self) -> Option<ServerFrame<'a>> {
        let mut kind = None;
        let (mut id, mut code, mut cursor, mut message, mut user_id) =
            (None, None, None, None, None);
        self.object(|s, key| {
            match key {
                b"type" => kind = Some(Cow::Borrowed(s.string()?)),
                b"id" => id = s.opt_string()?,
                b"code" => code = s.opt_string()?,
                b"cursor" => cursor = s.opt_string()?,
                b"message" => {
                    message = match s.peek()? {
                        b'{' => Some(s.message()?),
                        b'n' => s.null().map(|()| None)?,
                        // An error frame's human text, escapes and all.
                        b'"' => s.skip().map(|()| None)?,
                        _ => return None,
                    }
                }
                b"user_id" => {
                    user_id = if s.peek()? == b'n' {
                        s.null().map(|()| None)?
                    } else {
                        Some(s.u64()?)
                    }
                }
                _ => s.skip()?,
            }
            Some(())
        })?;
        self.ws();
        if self.i != self.b.len() {
            return None;
        }
        Some(ServerFrame {
            kind: kind?,
            id,
            code,
            cursor,
            message,
            user_id,
        })
    }

    fn message(&mut self) -> Option<Message<'a>> {
        let (mut chat_id, mut seq, mut sender_id) = (None, None, None);
        let (mut text, mut client_msg_id) = (None, None);
        self.object(|s, key| {
            match key {
                b"chat_id" => chat_id = Some(s.u64()?),
                b"seq" => seq = Some(s.u64()?),
                b"sender_id" => sender_id = Some(s.u64()?),
                b"text" => text = s.opt_string()?,
                b"client_msg_id" => client_msg_id = s.opt_string()?,
                _ => s.skip()?,
            }
            Some(())
        })?;
        Some(Message {
            chat_id: chat_id?,
            seq: seq?,
            sender_id: sender_id?,
            text,
            client_msg_id,
        })
    }
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
