//! Migrations whose text changed after they shipped, in comments only, and the checksums they
//! shipped with.
//!
//! sqlx records a SHA-384 of each applied migration's file in `_sqlx_migrations` and refuses to
//! start when a file no longer matches ("migration N was previously applied but has been
//! modified"). A comment fix would then stop every deployment that had already run the old file.
//! Before migrating, each backend moves the recorded checksum of the versions listed here from
//! the shipped one to the current file's, and only when the recorded one is exactly the shipped
//! one: a database migrated with some other text still fails as sqlx intends.
//!
//! Only ever list a revision whose SQL statements are unchanged; a changed statement is a new
//! migration.

use sqlx::migrate::Migrator;

/// A migration version and the hex SHA-384 of the file as it first shipped.
pub(crate) struct Revision {
    pub version: i64,
    pub shipped_checksum: &'static str,
}

/// MySQL migrations revised since they shipped (header comments reworded).
pub(crate) const MYSQL: &[Revision] = &[
    Revision {
        version: 3,
        shipped_checksum: "65e1ad4f8d01d7b7a962c39670736ce4b8d09ff3901c6c6a3213dabe8d9a0b30550ec60535851162d74832f92da6e3c8",
    },
    Revision {
        version: 4,
        shipped_checksum: "7793d2395b171ffe6544b3a89f0ab4f67a1a0d0647ca49f202494478c0cfd56f44ba39490924a9e5fb017ad6ceec9bca",
    },
];

/// SQLite migrations revised since they shipped (header comments reworded).
pub(crate) const SQLITE: &[Revision] = &[Revision {
    version: 1,
    shipped_checksum: "55bc986acc6be70595fe7dcf4a50e7b2652f7baa43baa1b53491ffaab89f051b07ffb43ab00fd5c3a61c9adfef794b07",
}];

/// The `(version, shipped checksum, current checksum)` of each revision that `migrator` holds.
pub(crate) fn checksum_moves(
    migrator: &Migrator,
    revisions: &[Revision],
) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    revisions
        .iter()
        .filter_map(|revision| {
            let current = migrator
                .iter()
                .find(|m| m.version == revision.version)?
                .checksum
                .to_vec();
            let shipped = hex_bytes(revision.shipped_checksum)?;
            (shipped != current).then_some((revision.version, shipped, current))
        })
        .collect()
}

/// Bytes of a lowercase hex string; `None` if it is not one.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
