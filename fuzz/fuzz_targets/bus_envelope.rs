//! Fuzzes the bus envelope decoder (MessagePack from Redis): no panic, and a decoded envelope
//! survives an encode/decode round trip unchanged.
#![no_main]

use chat_proto::BusEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = BusEnvelope::decode(data) {
        let again =
            BusEnvelope::decode(&envelope.encode()).expect("an envelope we encoded decodes");
        assert_eq!(envelope, again);
    }
});
