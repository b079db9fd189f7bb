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
