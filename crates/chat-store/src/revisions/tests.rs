//! The revision table against the migrations compiled in.

use super::*;

#[test]
fn hex_round_trips_and_rejects_garbage() {
    assert_eq!(hex_bytes("00ff10"), Some(vec![0, 255, 16]));
    assert_eq!(hex_bytes("0"), None);
    assert_eq!(hex_bytes("zz"), None);
}

#[test]
fn every_revision_names_a_shipped_migration_with_a_48_byte_checksum() {
    for (migrator, revisions) in [
        (&crate::mysql::MIGRATOR, MYSQL),
        (&crate::sqlite::MIGRATOR, SQLITE),
    ] {
        for revision in revisions {
            let shipped = hex_bytes(revision.shipped_checksum).expect("hex checksum");
            assert_eq!(shipped.len(), 48, "version {}", revision.version);
            assert!(
                migrator.iter().any(|m| m.version == revision.version),
                "version {} is not a migration",
                revision.version
            );
        }
        assert_eq!(checksum_moves(migrator, revisions).len(), revisions.len());
    }
}
