//! A cheap hash for maps keyed by user and chat ids, the maps every delivery looks up (the hub's
//! sockets per user, a group's local members).
//!
//! The ids are assigned by chat-api, not chosen by clients, so the standard hasher's defence
//! against chosen keys buys nothing here; it cost about a fifth of the dispatcher's instructions
//! per delivery. One widening multiply folds every bit of the id into the low bits the table
//! indexes with, which matters because the hub shards users by `id % 64`: within a shard the
//! ids' low bits are all alike.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for one `u64` (other input still hashes, byte by byte, just not as cheaply).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

/// An odd constant with well-spread bits (2^64 divided by the golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl IdHasher {
    fn mix(&mut self, value: u64) {
        let product = u128::from(self.0 ^ value) * u128::from(MULTIPLIER);
        // Truncations are the point: the product's halves are folded together.
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.mix(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }
}

/// A map keyed by an id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests;
