//! A client's books on one chat: which seqs it has seen and the highest it knows of, so that gaps
//! (messages committed but never delivered to it) can be counted at the end, across sessions.

pub struct Book {
    pub chat: u64,
    pub members: u64,
    /// "pair" or "group" (the `chat` tag of the k6 scripts).
    pub kind: &'static str,
    seen: Vec<u64>,
    pub n: u64,
    pub max: u64,
}

impl Book {
    pub fn new(chat: u64, members: u64, kind: &'static str) -> Self {
        Book {
            chat,
            members,
            kind,
            seen: Vec::new(),
            n: 0,
            max: 0,
        }
    }

    /// Marks `seq` seen; false when it was already.
    pub fn note(&mut self, seq: u64) -> bool {
        self.max = self.max.max(seq);
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            return false;
        }
        self.seen[word] |= 1 << bit;
        self.n += 1;
        true
    }

    /// An ack's seq raises the highest known without marking it seen: the socket must still
    /// receive that message as `new_message`.
    pub fn note_max(&mut self, seq: u64) {
        self.max = self.max.max(seq);
    }

    /// Seqs from 1 to the highest known that never arrived.
    pub fn gaps(&self) -> u64 {
        self.max.saturating_sub(self.n)
    }
}

#[cfg(test)]
mod tests;
