use std::hash::{BuildHasher, BuildHasherDefault};

use super::{IdHasher, IdMap};

#[test]
fn ids_of_one_hub_shard_spread_over_the_low_bits() {
    // Users 64 apart land in the same hub shard; their hashes must not share low bits.
    let build = BuildHasherDefault::<IdHasher>::default();
    let mut buckets = [0usize; 256];
    for n in 0..4096u64 {
        buckets[(build.hash_one(7 + 64 * n) & 255) as usize] += 1;
    }
    let fullest = buckets.iter().max().copied().unwrap_or(0);
    assert!(
        fullest <= 40,
        "4,096 ids over 256 buckets, at most {fullest} in one"
    );
}

#[test]
fn an_id_map_is_a_map() {
    let mut map = IdMap::default();
    map.insert(1u64, "a");
    map.insert(65, "b");
    assert_eq!(map.get(&65), Some(&"b"));
    assert_eq!(map.remove(&1), Some("a"));
    assert_eq!(map.len(), 1);
}
