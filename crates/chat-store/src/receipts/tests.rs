use chat_proto::{ChatKind, DeliveredMove, MemberRole};

use super::*;

fn standing(kind: ChatKind, role: MemberRole) -> Membership {
    Membership { kind, role }
}

#[test]
fn only_the_sender_edits_and_never_a_tombstone() {
    let member = standing(ChatKind::Group, MemberRole::Owner);
    assert!(Change::Edit("x").check(1, &member, 1, false).is_ok());
    assert!(matches!(
        Change::Edit("x").check(2, &member, 1, false),
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        Change::Edit("x").check(1, &member, 1, true),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn the_sender_or_a_group_owner_deletes() {
    let owner = standing(ChatKind::Group, MemberRole::Owner);
    let member = standing(ChatKind::Group, MemberRole::Member);
    let private = standing(ChatKind::Private, MemberRole::Owner);
    assert!(Change::Delete.check(1, &member, 1, false).is_ok());
    assert!(Change::Delete.check(2, &owner, 1, false).is_ok());
    assert!(matches!(
        Change::Delete.check(2, &member, 1, false),
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        Change::Delete.check(2, &private, 1, false),
        Err(StoreError::Forbidden(_))
    ));
}

#[test]
fn a_batch_keeps_the_highest_move_per_member_and_answers_every_move() {
    let moves = [
        DeliveredMove {
            user_id: 1,
            chat_id: 7,
            up_to_seq: 3,
        },
        DeliveredMove {
            user_id: 2,
            chat_id: 7,
            up_to_seq: 1,
        },
        DeliveredMove {
            user_id: 1,
            chat_id: 7,
            up_to_seq: 9,
        },
    ];
    let merged = coalesce(&moves);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0].0.up_to_seq, 9);
    assert_eq!(merged[0].1, vec![0, 2]);
    let at = chrono::DateTime::from_timestamp_millis(5).expect("valid");
    let answers = vec![
        Ok(ReadOutcome {
            moved_to: Some(9),
            read_at: at,
            member_ids: vec![1, 2],
        }),
        Err(StoreError::NotFound),
    ];
    let spread = spread(merged, answers, 3);
    assert_eq!(spread.len(), 3);
    assert_eq!(spread[0].as_ref().ok().and_then(|o| o.moved_to), Some(9));
    assert!(matches!(spread[1], Err(StoreError::NotFound)));
    assert_eq!(spread[2].as_ref().ok().map(|o| o.moved_to), Some(None));
}

#[test]
fn delivered_targets_clamp_to_the_last_message() {
    assert_eq!(delivered_target(10, 4), Some(4));
    assert_eq!(delivered_target(3, 4), Some(3));
    assert_eq!(delivered_target(0, 4), None);
    assert_eq!(delivered_target(5, 0), None);
}
