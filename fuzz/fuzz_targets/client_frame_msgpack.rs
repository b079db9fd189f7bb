//! Fuzzes the MessagePack client frame decoder: no panic, no unbounded recursion, and a decoded
//! frame survives an encode/decode round trip unchanged.
#![no_main]

use chat_proto::{ClientFrame, WireFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = WireFormat::MsgPack.decode_client_frame(data) {
        let again: ClientFrame = WireFormat::MsgPack
            .decode_client_frame(&WireFormat::MsgPack.encode(&frame))
            .expect("a frame we encoded decodes");
        assert_eq!(frame, again);
    }
});
