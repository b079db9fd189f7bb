//! Fuzzes the sync cursor parser: no panic or overflow, and an accepted cursor prints back to a
//! string that parses to the same cursor.
#![no_main]

use chat_proto::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for now in [0, 1_700_000_000_000, i64::MAX] {
        if let Ok(cursor) = Cursor::parse(raw, now) {
            assert_eq!(Cursor::parse(&cursor.to_string(), now), Ok(cursor));
        }
    }
});
