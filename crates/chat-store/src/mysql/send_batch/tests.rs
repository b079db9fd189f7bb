//! The batch's arithmetic, without a database; its statements and session are tested on MariaDB
//! by `tests/mysql_send_batch.rs`.

use super::statements::{InsertFacts, parse_members};

#[test]
fn ids_are_computed_only_in_the_consecutive_lock_modes() {
    assert_eq!(InsertFacts::id_step(0, 1), Some(1));
    assert_eq!(InsertFacts::id_step(1, 2), Some(2));
    assert_eq!(InsertFacts::id_step(2, 1), None);
    assert_eq!(InsertFacts::id_step(1, 0), None);
}

#[test]
fn a_member_list_must_match_its_count_and_sum() {
    assert_eq!(parse_members("2 21 [10,11]"), Ok(vec![10, 11]));
    assert_eq!(parse_members("3 33 [10, 11, 12]"), Ok(vec![10, 11, 12]));
    assert!(parse_members("2 21 [10,1]").is_err(), "cut inside a number");
    assert!(
        parse_members("3 33 [10,11]").is_err(),
        "cut between numbers"
    );
    assert!(parse_members("2 [10,11]").is_err(), "no sum");
}
