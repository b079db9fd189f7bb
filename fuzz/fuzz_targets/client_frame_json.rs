//! Fuzzes the JSON client frame decoder (and the depth pre-scan): no panic, no unbounded
//! recursion, and a decoded frame survives an encode/decode round trip unchanged.
#![no_main]

use chat_proto::{ClientFrame, WireFormat, json_depth_exceeds};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = json_depth_exceeds(data, 32);
    if let Ok(frame) = WireFormat::Json.decode_client_frame(data) {
        let again: ClientFrame = WireFormat::Json
            .decode_client_frame(&WireFormat::Json.encode(&frame))
            .expect("a frame we encoded decodes");
        assert_eq!(frame, again);
    }
    let _ = WireFormat::Json.decode_client_frame_limited(data, 2);
});
