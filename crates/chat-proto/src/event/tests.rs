use crate::{Cursor, ServerEvent};

#[test]
fn receipts_are_read_at_the_time_their_cursor_is_made_from() {
    let at = 1_700_000_123_456;
    let read = ServerEvent::MessageRead {
        chat_id: 1,
        user_id: 2,
        up_to_seq: 3,
        cursor: Cursor::after_event(at).to_string(),
    };
    assert_eq!(read.sync_time_ms(), Some(at));
    let typing = ServerEvent::Typing {
        chat_id: 1,
        user_id: 2,
    };
    assert_eq!(typing.sync_time_ms(), None, "a sync does not return typing");
}
