//! Unique, valid names for test data.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A random lowercase alphanumeric string of `len` characters.
fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// A username valid for the contract (3–32 of `[a-z0-9_.-]`) that starts with the cleaned-up
/// `tag` and is unique across tests and runs: `<tag>_<counter><random>`.
pub fn unique_username(tag: &str) -> String {
    let mut clean: String = tag
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(*c))
        .take(16)
        .collect();
    if clean.is_empty() {
        clean.push('u');
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{clean}_{n}{}", random_suffix(8));
    name.chars().take(32).collect()
}

/// A unique `client_msg_id` (at most 64 characters).
pub fn unique_client_msg_id(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag.chars().take(32).collect();
    format!("{tag}-{n}-{}", random_suffix(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_valid_and_unique() {
        let a = unique_username("Alice Smith!");
        let b = unique_username("Alice Smith!");
        assert_ne!(a, b);
        for name in [a, b, unique_username(""), unique_username(&"x".repeat(40))] {
            assert!((3..=32).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c)),
                "{name}"
            );
        }
    }
}
