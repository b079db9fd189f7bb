use super::*;

#[test]
fn gaps_are_what_is_below_the_highest_seq_and_unseen() {
    let mut b = Book::new(1, 2, "pair");
    assert!(b.note(1));
    assert!(b.note(3));
    assert!(!b.note(3));
    assert_eq!(b.gaps(), 1);
    b.note_max(5);
    assert_eq!(b.gaps(), 3);
    for s in [2, 4, 5] {
        b.note(s);
    }
    assert_eq!(b.gaps(), 0);
    assert!(b.note(200));
    assert_eq!(b.gaps(), 194);
}
