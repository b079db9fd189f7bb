//! Escaping LIKE patterns built from user input.

#[test]
fn like_wildcards_are_escaped() {
    assert_eq!(super::escape_like("a_b%c\\"), "a\\_b\\%c\\\\");
}
