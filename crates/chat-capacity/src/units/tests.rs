use super::*;

#[test]
fn the_built_in_table_parses_and_every_unit_names_its_command() {
    let u = Units::built_in().expect("docs/capacity-units.toml parses");
    for (name, unit) in u.all() {
        assert!(!unit.command.trim().is_empty(), "{name}");
        assert!(!unit.date.trim().is_empty(), "{name} has no date");
        assert!(
            !unit.floor.trim().is_empty(),
            "{name} says nothing of its floor"
        );
    }
    assert_eq!(u.all().len(), 37);
}

#[test]
fn a_negative_cost_is_refused_with_its_name() {
    let text = BUILT_IN.replacen(
        "[gateway.send_us]\nvalue = ",
        "[gateway.send_us]\nvalue = -",
        1,
    );
    assert_ne!(text, BUILT_IN, "the table has a [gateway.send_us] entry");
    let err = Units::parse(&text).expect_err("negative");
    assert!(err.to_string().contains("gateway.send_us"), "{err}");
}

#[test]
fn a_unit_without_a_command_is_refused() {
    let start = BUILT_IN.find("[api.message_us]").expect("entry");
    let line = BUILT_IN[start..].find("command = ").expect("command") + start;
    let end = BUILT_IN[line..].find('\n').expect("eol") + line;
    let text = format!("{}command = \"  \"{}", &BUILT_IN[..line], &BUILT_IN[end..]);
    let err = Units::parse(&text).expect_err("empty command");
    assert!(err.to_string().contains("api.message_us"), "{err}");
}

#[test]
fn a_missing_or_unknown_unit_is_a_parse_error() {
    let missing = BUILT_IN.replacen("[redis.publish_us]", "[redis.publish_usx]", 1);
    assert!(matches!(Units::parse(&missing), Err(UnitsError::Parse(_))));
}

/// The frame-size unit against a `new_message` event encoded as the gateway encodes it: ids of
/// a large deployment, a UUID client id, a real cursor.
#[test]
fn the_frame_overhead_matches_the_wire_encoding() {
    use chat_proto::{Message, MessageKind, ServerEvent, WireFormat};
    let text = "x".repeat(100);
    let event = ServerEvent::NewMessage {
        message: Message {
            id: 4_503_599_627_370_495,
            chat_id: 1_099_511_627_775,
            seq: 1_234_567,
            sender_id: 1_099_511_627_775,
            kind: MessageKind::Text,
            text: Some(text.clone()),
            attachment: None,
            reply_to_id: None,
            client_msg_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            created_at: chat_proto::time::now_millis(),
            edited_at: None,
            deleted_at: None,
        },
        cursor: chat_proto::Cursor::after_event(chat_proto::time::now_millis().timestamp_millis())
            .to_string(),
    };
    // A server frame of this size has a 4-byte WebSocket header.
    let overhead = WireFormat::Json.encode(&event).len() as f64 + 4.0 - text.len() as f64;
    let u = Units::built_in().expect("table");
    let unit = u.wire.frame_overhead_bytes.value;
    assert!(
        (unit - overhead).abs() <= overhead * 0.05,
        "table says {unit}, the encoding gives {overhead}"
    );
}

#[test]
fn idle_cost_per_socket_falls_with_density_and_is_bounded_near_zero() {
    let mut u = Units::built_in().expect("table");
    u.gateway.socket_us_per_s.value = 4.0;
    u.gateway.socket_density_ref.value = 3000.0;
    u.gateway.socket_density_exponent.value = 0.5;
    let g = &u.gateway;
    assert!((g.socket_us_per_s_at(3000.0) - 4.0).abs() < 1e-12);
    assert!((g.socket_us_per_s_at(12_000.0) - 2.0).abs() < 1e-12);
    assert_eq!(g.socket_us_per_s_at(1.0), g.socket_us_per_s_at(100.0));
    u.gateway.socket_density_exponent.value = 0.0;
    assert_eq!(u.gateway.socket_us_per_s_at(50_000.0), 4.0);
}

#[test]
fn a_density_exponent_of_one_or_more_is_refused() {
    let start = BUILT_IN
        .find("[gateway.socket_density_exponent]\nvalue = ")
        .expect("entry");
    let value = start + "[gateway.socket_density_exponent]\nvalue = ".len();
    let end = BUILT_IN[value..].find('\n').expect("eol") + value;
    let text = format!("{}1.2{}", &BUILT_IN[..value], &BUILT_IN[end..]);
    let err = Units::parse(&text).expect_err("exponent");
    assert!(err.to_string().contains("socket_density_exponent"), "{err}");
}

#[test]
fn redis_idle_cost_per_socket_falls_with_density_towards_the_marginal_cost() {
    let mut u = Units::built_in().expect("table");
    u.redis.socket_us_per_s.value = 0.3;
    u.redis.idle_us_per_s.value = 1_000.0;
    let r = &u.redis;
    assert!((r.socket_us_per_s_at(1_000.0) - 1.3).abs() < 1e-12);
    assert!((r.socket_us_per_s_at(10_000.0) - 0.4).abs() < 1e-12);
    assert!(r.socket_us_per_s_at(100_000.0) < r.socket_us_per_s_at(10_000.0));
    assert!(r.socket_us_per_s_at(1e9) > 0.3);
    assert_eq!(r.socket_us_per_s_at(0.0), r.socket_us_per_s_at(100.0));
}

#[test]
fn the_built_in_redis_line_goes_through_the_calibration_holds() {
    // C1's last holds: 2,000 sockets at 0.831 µs a socket-second in both runs; C2's: 20,000 at
    // 0.262 in both (loadtest/results/20261207T155750Z-connect-2000-chat-load,
    // …160842Z-connect-2000…, …160145Z-connect-20000… and …161007Z-connect-20000…): the line
    // goes through each size's mean.
    let r = Units::built_in().expect("table").redis;
    assert!((r.socket_us_per_s_at(2_000.0) - 0.831).abs() < 0.01);
    assert!((r.socket_us_per_s_at(20_000.0) - 0.262).abs() < 0.01);
}
