//! Names of every Redis key and channel, in one place.

use crate::{ChatId, Topic, UserId};

/// How many partitions group chat channels are spread over: a chat's channel carries
/// `{p<chat_id % CHAT_PARTITIONS>}` as its Redis Cluster hash tag. A gateway subscribes the
/// channels of every group its users are in, and SSUBSCRIBE takes channels of one slot per
/// command: with the chat id itself as the tag, a gateway holding members of thousands of groups
/// would send thousands of commands after a reconnect. A few dozen tags keep that to a few dozen
/// commands while still spreading the chats (and their publishes) over every master of a
/// cluster of up to a few dozen masters. Changing it renames every chat channel: publishers and
/// gateways of one deployment must agree on it.
pub const CHAT_PARTITIONS: u64 = 64;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `P:u:{42}`: the pub/sub channel of one user.
    pub fn user_channel(&self, user: UserId) -> String {
        format!("{}:u:{{{user}}}", self.prefix)
    }

    /// `P:c:{p7}:71`: the pub/sub channel of group chat 71 (partition 71 % 64 = 7).
    pub fn chat_channel(&self, chat: ChatId) -> String {
        format!("{}:c:{{p{}}}:{chat}", self.prefix, chat % CHAT_PARTITIONS)
    }

    /// The channel of a topic.
    pub fn channel(&self, topic: Topic) -> String {
        match topic {
            Topic::User(user) => self.user_channel(user),
            Topic::Chat(chat) => self.chat_channel(chat),
        }
    }

    /// The topic of a channel made by [`Keys::channel`].
    pub fn topic_of_channel(&self, channel: &[u8]) -> Option<Topic> {
        if let Some(user) = self.user_of_channel(channel) {
            return Some(Topic::User(user));
        }
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let rest = rest.strip_prefix(b":c:{p")?;
        let close = rest.iter().position(|&b| b == b'}')?;
        let id = rest[close + 1..].strip_prefix(b":")?;
        let chat: ChatId = std::str::from_utf8(id).ok()?.parse().ok()?;
        let partition: u64 = std::str::from_utf8(&rest[..close]).ok()?.parse().ok()?;
        (partition == chat % CHAT_PARTITIONS).then_some(Topic::Chat(chat))
    }

    /// `P:log:u:{42}` / `P:log:c:{p7}:71`: the recent-event log of a topic's channel (a sorted
    /// set of envelopes scored by event time), with the channel's hash tag so that the log, its
    /// bookkeeping and the channel share a slot.
    pub fn recent_log(&self, topic: Topic) -> String {
        match topic {
            Topic::User(user) => format!("{}:log:u:{{{user}}}", self.prefix),
            Topic::Chat(chat) => {
                format!(
                    "{}:log:c:{{p{}}}:{chat}",
                    self.prefix,
                    chat % CHAT_PARTITIONS
                )
            }
        }
    }

    /// `P:logm:u:{42}` / `P:logm:c:{p7}:71`: what the log of a topic's channel covers (a hash:
    /// `from`, complete from that ms on; `last`, the highest score or write time it saw).
    pub fn recent_meta(&self, topic: Topic) -> String {
        match topic {
            Topic::User(user) => format!("{}:logm:u:{{{user}}}", self.prefix),
            Topic::Chat(chat) => {
                format!(
                    "{}:logm:c:{{p{}}}:{chat}",
                    self.prefix,
                    chat % CHAT_PARTITIONS
                )
            }
        }
    }

    /// `P:subscriber`: the client name of a gateway's subscription connection (CLIENT LIST).
    pub fn subscriber_name(&self) -> String {
        format!("{}:subscriber", self.prefix)
    }

    /// The user id of a channel made by [`Keys::user_channel`].
    pub fn user_of_channel(&self, channel: &[u8]) -> Option<UserId> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let id = rest.strip_prefix(b":u:{")?.strip_suffix(b"}")?;
        std::str::from_utf8(id).ok()?.parse().ok()
    }

    /// `P:presence:{42}`: sorted set of the nodes holding the user's sockets, scored by expiry.
    pub fn presence(&self, user: UserId) -> String {
        format!("{}:presence:{{{user}}}", self.prefix)
    }

    /// `P:gw:nodes`: sorted set of gateway nodes, scored by heartbeat expiry.
    pub fn nodes(&self) -> String {
        format!("{}:gw:nodes", self.prefix)
    }

    /// `P:gw:node:<node>`: set of users with sockets on that node.
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:gw:node:{node}", self.prefix)
    }

    /// `P:{push}:jobs`: the stream of push-notification jobs (consumer group `push`). The hash
    /// tag puts it and its dead-letter stream in one slot.
    pub fn push_jobs(&self) -> String {
        format!("{}:{{push}}:jobs", self.prefix)
    }

    /// `P:{push}:dead`: jobs that failed too often, with the reason.
    pub fn push_dead(&self) -> String {
        format!("{}:{{push}}:dead", self.prefix)
    }

    /// `P:push:done:<job id>`: set (with a TTL) once a job was delivered.
    pub fn push_done(&self, job_id: &str) -> String {
        format!("{}:push:done:{job_id}", self.prefix)
    }

    /// `P:push:tries:<job id>`: delivery attempts so far, across workers.
    pub fn push_tries(&self, job_id: &str) -> String {
        format!("{}:push:tries:{job_id}", self.prefix)
    }

    /// `P:chat:{7}:announced`: the highest seq of chat 7 whose `new_message` was published.
    pub fn announced(&self, chat_id: u64) -> String {
        format!("{}:chat:{{{chat_id}}}:announced", self.prefix)
    }

    /// `P:api:{r}:pending`: hash of chat id → sends of api replica `r` not yet published.
    pub fn replica_pending(&self, replica: &str) -> String {
        format!("{}:api:{{{replica}}}:pending", self.prefix)
    }

    /// `P:api:{r}:changes`: hash of change id → an edit or deletion of api replica `r` not yet
    /// published (`crate::PendingChange`).
    pub fn replica_changes(&self, replica: &str) -> String {
        format!("{}:api:{{{replica}}}:changes", self.prefix)
    }

    /// `P:api:{r}:alive`: present while api replica `r` heartbeats.
    pub fn replica_alive(&self, replica: &str) -> String {
        format!("{}:api:{{{replica}}}:alive", self.prefix)
    }

    /// `P:api:late`: sorted set of `replica/id` → the ms it expires: writes of any replica whose
    /// publish is overdue.
    pub fn late_publishes(&self) -> String {
        format!("{}:api:late", self.prefix)
    }

    /// `P:api:replicas`: set of the api replicas that announce.
    pub fn replicas(&self) -> String {
        format!("{}:api:replicas", self.prefix)
    }

    /// `P:revoked:<jti>`: present while a logged-out token would still be valid.
    pub fn revoked(&self, jti: &str) -> String {
        format!("{}:revoked:{jti}", self.prefix)
    }

    /// `P:rl:msg:{42}`: the user's message token bucket.
    pub fn message_bucket(&self, user: UserId) -> String {
        format!("{}:rl:msg:{{{user}}}", self.prefix)
    }

    /// `P:rl:login:<ip>:<username>`: failed logins for one account from one address. The
    /// username is cut to 64 bytes (at a char boundary) so a huge one cannot make a huge key.
    pub fn login_failures(&self, username: &str, ip: &str) -> String {
        let mut end = username.len().min(64);
        while !username.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}:rl:login:{ip}:{}", self.prefix, &username[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;
    use crate::Topic;

    #[test]
    fn channel_names_round_trip() {
        let keys = Keys::new("t1");
        let channel = keys.user_channel(42);
        assert_eq!(channel, "t1:u:{42}");
        assert_eq!(keys.user_of_channel(channel.as_bytes()), Some(42));
        assert_eq!(keys.user_of_channel(b"t2:u:{42}"), None);
        assert_eq!(keys.user_of_channel(b"t1:u:{x}"), None);
        assert_eq!(keys.presence(7), "t1:presence:{7}");
        let chat = keys.chat_channel(71);
        assert_eq!(chat, "t1:c:{p7}:71");
        assert_eq!(
            keys.topic_of_channel(chat.as_bytes()),
            Some(Topic::Chat(71))
        );
        assert_eq!(
            keys.topic_of_channel(channel.as_bytes()),
            Some(Topic::User(42))
        );
        assert_eq!(keys.topic_of_channel(b"t1:c:{p8}:71"), None);
        assert_eq!(keys.topic_of_channel(b"t1:c:{p7}:x"), None);
        assert_eq!(keys.topic_of_channel(b"t2:c:{p7}:71"), None);
        assert_eq!(keys.push_jobs(), "t1:{push}:jobs");
        assert_eq!(keys.push_dead(), "t1:{push}:dead");
        assert_eq!(keys.push_done("m1-u2-t0"), "t1:push:done:m1-u2-t0");
        assert_eq!(keys.recent_log(Topic::User(42)), "t1:log:u:{42}");
        assert_eq!(keys.recent_meta(Topic::Chat(71)), "t1:logm:c:{p7}:71");
    }
}
