use super::*;

#[test]
fn numbers_are_grouped_and_rounded_by_size() {
    assert_eq!(n(1_234_567.4), "1,234,567");
    assert_eq!(n(-12_345.0), "-12,345");
    assert_eq!(n(100.0), "100");
    assert_eq!(n(12.345), "12.3");
    assert_eq!(n(0.123), "0.12");
}
