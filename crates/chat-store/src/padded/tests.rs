//! The lengths lists are padded to.

use super::padded_len;

#[test]
fn lengths_pad_to_powers_of_four() {
    let padded: Vec<usize> = [0, 1, 2, 4, 5, 16, 17, 64, 65, 1000, 1025]
        .into_iter()
        .map(padded_len)
        .collect();
    assert_eq!(padded, [1, 1, 4, 4, 16, 16, 64, 64, 256, 1024, 4096]);
}
