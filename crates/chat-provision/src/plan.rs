//! What to create, decided before touching the database: user names, which users share a private
//! chat, which form a group. Pure functions, so the layout the k6 scripts rely on is unit-tested.
//!
//! The layout: user `n` is `lt_<run>_<n>` (n from 0). With pairs, users `2k` and `2k+1` share a
//! private chat (an odd last user has none). With groups of K, users `[gK, gK+K)` form group `g`
//! (the first of them is its owner; a short tail that cannot fill a group is left out).

use std::ops::Range;

use anyhow::{bail, ensure};

/// The longest username the API accepts.
pub const MAX_USERNAME_CHARS: usize = 32;
/// Groups are capped like `POST /v1/chats` caps them.
pub const MAX_GROUP_MEMBERS: usize = 1000;

/// A run id names one provisioning run: 1–12 of `[a-z0-9]`.
pub fn validate_run_id(run: &str) -> anyhow::Result<()> {
    ensure!(
        (1..=12).contains(&run.len())
            && run
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "--run must be 1-12 characters of a-z and 0-9, got {run:?}"
    );
    Ok(())
}

pub fn username(run: &str, n: usize) -> String {
    format!("lt_{run}_{n}")
}

/// The `LIKE` pattern matching every username of a run (`_` escaped).
pub fn username_like(run: &str) -> String {
    format!("lt\\_{run}\\_%")
}

/// The key that makes a private chat unique per pair, as chat-store writes it.
pub fn pair_key(a: u64, b: u64) -> String {
    format!("{}:{}", a.min(b), a.max(b))
}

pub fn group_title(run: &str, g: usize) -> String {
    format!("lt_{run}_g{g}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub users: usize,
    /// Indexes of the two users of each private chat.
    pub pairs: Vec<(usize, usize)>,
    /// Index ranges of the members of each group; the first member is the owner.
    pub groups: Vec<Range<usize>>,
}

pub fn plan(run: &str, users: usize, pairs: bool, group_size: usize) -> anyhow::Result<Plan> {
    validate_run_id(run)?;
    ensure!(users > 0, "--users must be at least 1");
    let longest = username(run, users - 1);
    ensure!(
        longest.len() <= MAX_USERNAME_CHARS,
        "username {longest:?} would exceed {MAX_USERNAME_CHARS} characters: shorten --run"
    );
    if group_size == 1 || group_size > MAX_GROUP_MEMBERS {
        bail!("--group-size must be 0 (no groups) or 2-{MAX_GROUP_MEMBERS}, got {group_size}");
    }
    let pairs = if pairs {
        (0..users / 2).map(|k| (2 * k, 2 * k + 1)).collect()
    } else {
        Vec::new()
    };
    let groups = (0..users.checked_div(group_size).unwrap_or(0))
        .map(|g| g * group_size..(g + 1) * group_size)
        .collect();
    Ok(Plan {
        users,
        pairs,
        groups,
    })
}

/// `prefix` followed by `rows` copies of `row`, comma-separated: one multi-row statement.
pub fn multi_row_sql(prefix: &str, row: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * (row.len() + 1));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_lowercase_alphanumerics() {
        assert!(validate_run_id("a1b2").is_ok());
        assert!(validate_run_id("abcdefghijkl").is_ok());
        assert!(validate_run_id("").is_err());
        assert!(validate_run_id("abcdefghijklm").is_err());
        assert!(validate_run_id("Run").is_err());
        assert!(validate_run_id("a_b").is_err());
        assert!(validate_run_id("a-b").is_err());
    }

    #[test]
    fn usernames_fit_the_api_rules() {
        let name = username("abcdefghijkl", 9_999_999);
        assert_eq!(name, "lt_abcdefghijkl_9999999");
        assert!(name.len() <= MAX_USERNAME_CHARS);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        );
        assert_eq!(username_like("r1"), "lt\\_r1\\_%");
    }

    #[test]
    fn pair_keys_are_low_colon_high() {
        assert_eq!(pair_key(7, 3), "3:7");
        assert_eq!(pair_key(3, 7), "3:7");
    }

    #[test]
    fn pairs_are_consecutive_and_an_odd_tail_is_alone() {
        let p = plan("r", 5, true, 0).expect("plan");
        assert_eq!(p.pairs, vec![(0, 1), (2, 3)]);
        assert!(p.groups.is_empty());
        assert!(plan("r", 4, false, 0).expect("plan").pairs.is_empty());
    }

    #[test]
    fn groups_are_full_consecutive_blocks() {
        let p = plan("r", 11, true, 4).expect("plan");
        assert_eq!(p.groups, vec![0..4, 4..8]);
        assert_eq!(p.pairs.len(), 5);
        assert!(plan("r", 10, false, 1).is_err());
        assert!(plan("r", 10, false, MAX_GROUP_MEMBERS + 1).is_err());
        assert!(plan("r", 0, false, 0).is_err());
    }

    #[test]
    fn too_long_usernames_are_refused() {
        // "lt_" + 12 + "_" + 17 digits = 33 characters.
        assert!(plan("abcdefghijkl", 10_usize.pow(16) + 1, false, 0).is_err());
    }

    #[test]
    fn multi_row_statements() {
        assert_eq!(
            multi_row_sql("INSERT INTO t (a, b) VALUES ", "(?, ?)", 3),
            "INSERT INTO t (a, b) VALUES (?, ?),(?, ?),(?, ?)"
        );
        assert_eq!(multi_row_sql("X ", "(?)", 1), "X (?)");
    }
}
