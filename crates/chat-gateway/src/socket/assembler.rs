//! Reassembles fragmented WebSocket messages with a size limit on the whole message (the frame
//! reader checks single frames only) and checks that every text message is UTF-8.

use fastwebsockets::OpCode;

use crate::hub::close_code;

/// Why a connection must close, with the close code and reason to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCause {
    pub code: u16,
    pub reason: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

pub struct Assembler {
    limit: usize,
    pending: Option<Message>,
}

impl Assembler {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            pending: None,
        }
    }

    /// Takes a data frame; returns a whole message once its last fragment arrived.
    pub fn push(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<Option<Message>, CloseCause> {
        match (opcode, self.pending.as_mut()) {
            (OpCode::Text | OpCode::Binary, None) => {
                self.check_size(payload.len())?;
                let message = Message {
                    opcode,
                    payload: payload.to_vec(),
                };
                if fin {
                    return whole(message).map(Some);
                }
                self.pending = Some(message);
                Ok(None)
            }
            (OpCode::Continuation, Some(pending)) => {
                let total = pending.payload.len() + payload.len();
                if total > self.limit {
                    return Err(too_large());
                }
                pending.payload.extend_from_slice(payload);
                if !fin {
                    return Ok(None);
                }
                let Some(message) = self.pending.take() else {
                    return Ok(None);
                };
                whole(message).map(Some)
            }
            _ => Err(CloseCause {
                code: close_code::PROTOCOL_ERROR,
                reason: "unexpected continuation or interleaved message",
            }),
        }
    }

    fn check_size(&self, len: usize) -> Result<(), CloseCause> {
        if len > self.limit {
            Err(too_large())
        } else {
            Ok(())
        }
    }
}

/// A message whose last fragment arrived, if it is what its opcode says.
fn whole(message: Message) -> Result<Message, CloseCause> {
    if message.opcode == OpCode::Text && std::str::from_utf8(&message.payload).is_err() {
        return Err(CloseCause {
            code: close_code::INVALID_DATA,
            reason: "text message is not valid UTF-8",
        });
    }
    Ok(message)
}

fn too_large() -> CloseCause {
    CloseCause {
        code: close_code::POLICY,
        reason: "message too large",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_pass_through() {
        let mut a = Assembler::new(10);
        let m = a
            .push(true, OpCode::Text, b"hi")
            .expect("ok")
            .expect("complete");
        assert_eq!(m.payload, b"hi");
    }

    #[test]
    fn fragments_are_joined_and_limited() {
        let mut a = Assembler::new(6);
        assert_eq!(a.push(false, OpCode::Text, b"abc").expect("ok"), None);
        let m = a
            .push(true, OpCode::Continuation, b"def")
            .expect("ok")
            .expect("complete");
        assert_eq!(m.payload, b"abcdef");
        assert_eq!(a.push(false, OpCode::Binary, b"abcd").expect("ok"), None);
        assert_eq!(a.push(true, OpCode::Continuation, b"efg"), Err(too_large()));
    }

    #[test]
    fn protocol_violations_close() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(true, OpCode::Continuation, b"x")
                .expect_err("no start")
                .code,
            close_code::PROTOCOL_ERROR
        );
        assert_eq!(a.push(false, OpCode::Text, b"a").expect("ok"), None);
        assert_eq!(
            a.push(true, OpCode::Text, b"b")
                .expect_err("interleaved")
                .code,
            close_code::PROTOCOL_ERROR
        );
    }

    #[test]
    fn fragmented_text_must_be_utf8() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(false, OpCode::Text, &[0xe2, 0x82]).expect("ok"),
            None
        );
        assert_eq!(
            a.push(true, OpCode::Continuation, &[0x28])
                .expect_err("bad utf8")
                .code,
            close_code::INVALID_DATA
        );
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(false, OpCode::Text, &[0xe2, 0x82]).expect("ok"),
            None
        );
        assert!(
            a.push(true, OpCode::Continuation, &[0xac])
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn a_single_text_frame_must_be_utf8() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(true, OpCode::Text, &[0x68, 0xff])
                .expect_err("bad utf8")
                .code,
            close_code::INVALID_DATA
        );
        assert!(
            a.push(true, OpCode::Binary, &[0x68, 0xff])
                .expect("binary is not checked")
                .is_some()
        );
    }

    #[test]
    fn oversize_single_frame_closes_with_policy() {
        let mut a = Assembler::new(3);
        assert_eq!(a.push(true, OpCode::Binary, b"abcd"), Err(too_large()));
    }
}
