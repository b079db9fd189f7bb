//! Unit tests of the checker.

use std::collections::HashMap;

use super::*;

fn acked(id: u64, chat_id: u64, seq: u64, sender: u64, phase: usize) -> AckedMessage {
    AckedMessage {
        id,
        chat_id,
        seq,
        sender,
        client_msg_id: format!("m{id}"),
        phase,
    }
}

#[test]
fn the_checker_counts_per_user_and_phase() {
    let a = ClientReport {
        user_id: 1,
        acked: vec![acked(10, 7, 1, 1, 0), acked(11, 7, 2, 1, 1)],
        final_synced: true,
        ..ClientReport::default()
    };
    let b = ClientReport {
        user_id: 2,
        received: HashMap::from([(10, 0)]),
        phases: vec![
            PhaseCounters::default(),
            PhaseCounters {
                duplicated: 1,
                ..PhaseCounters::default()
            },
        ],
        final_synced: true,
        ..ClientReport::default()
    };
    let members = HashMap::from([(7, vec![1, 2])]);
    let phases = vec!["one".to_string(), "two".to_string()];
    let verdict = check(&[a, b], &members, &phases);
    let one = &verdict.faults[0];
    assert_eq!((one.sent, one.received, one.lost), (1, 1, 0));
    let two = &verdict.faults[1];
    assert_eq!(
        (two.sent, two.received, two.lost, two.duplicated),
        (1, 0, 1, 1)
    );
    assert_eq!(verdict.total_messages, 2);
    assert!(
        verdict.failures.iter().any(|f| f.contains("message 11")),
        "{:?}",
        verdict.failures
    );
    assert!(
        two.line()
            .starts_with("fault=two sent=1 received=0 lost=1 duplicated=1 out_of_order=0")
    );
}

#[test]
fn a_member_that_missed_the_last_change_lost_an_update() {
    let change = |message_id, kind, text: Option<&str>| AckedChange {
        message_id,
        chat_id: 7,
        actor: 1,
        kind,
        text: text.map(str::to_string),
        phase: 0,
    };
    let seen = |at: &str, text: Option<&str>, deleted| SeenState {
        at: at.to_string(),
        text: text.map(str::to_string),
        deleted,
    };
    let a = ClientReport {
        user_id: 1,
        acked: vec![acked(10, 7, 1, 1, 0), acked(11, 7, 2, 1, 0)],
        changes: vec![
            change(10, ChangeKind::Edit, Some("first")),
            change(10, ChangeKind::Edit, Some("second")),
            change(11, ChangeKind::Delete, None),
        ],
        final_synced: true,
        ..ClientReport::default()
    };
    // Bob ends with both final states; carol saw only the first edit and nothing of the delete.
    let b = ClientReport {
        user_id: 2,
        received: HashMap::from([(10, 0), (11, 0)]),
        updates_seen: HashMap::from([
            (10, seen("2026-01-01T00:00:00.002Z", Some("second"), false)),
            (11, seen("2026-01-01T00:00:00.003Z", None, true)),
        ]),
        final_synced: true,
        ..ClientReport::default()
    };
    let c = ClientReport {
        user_id: 3,
        received: HashMap::from([(10, 0), (11, 0)]),
        updates_seen: HashMap::from([(10, seen("2026-01-01T00:00:00.001Z", Some("first"), false))]),
        final_synced: true,
        ..ClientReport::default()
    };
    let members = HashMap::from([(7, vec![1, 2, 3])]);
    let verdict = check(&[a, b, c], &members, &["one".to_string()]);
    let one = &verdict.faults[0];
    assert_eq!(verdict.total_changes, 3);
    assert_eq!(
        (one.updates_sent, one.updates_received, one.updates_lost),
        (4, 2, 2)
    );
    let lost: Vec<&String> = verdict
        .failures
        .iter()
        .filter(|f| f.starts_with("update lost: user 3"))
        .collect();
    assert_eq!(lost.len(), 2, "{:?}", verdict.failures);
}
