//! The presence registry: which gateway nodes hold sockets of which users.
//!
//! `P:presence:{uid}` is a sorted set of node ids scored by an expiry time that the owning node
//! refreshes with its heartbeat. A user is online while the set has an unexpired entry. The
//! first/last transitions are decided inside Lua scripts, so two nodes racing on the same user
//! cannot both (or neither) report it. A node that dies stops refreshing; the survivors reap its
//! entries and report the users that thereby went offline.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Cmd, Script, Value};

use crate::{Bus, BusConn, Result, UserId, memory};

/// Removes expired entries, adds this node, and answers how many nodes held the user before.
const CONNECT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return before
";

/// Removes a node's entry; answers 1 when that made the user go offline.
const DISCONNECT: &str = r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local left = redis.call('ZCARD', KEYS[1])
if removed == 1 and left == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

// Built once: `Script::new` hashes the source (SHA-1) on every call.
static CONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CONNECT));
static DISCONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DISCONNECT));

/// Heartbeat batches are cut into pipelines of this many users.
const HEARTBEAT_CHUNK: usize = 1000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Bus {
    /// Registers the user's first socket on `node`; `true` when the user had no socket anywhere
    /// (the user just came online).
    pub async fn presence_connect(&self, user: UserId, node: &str, ttl: Duration) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.presence.connect(user, node, ttl, memory::now()));
        }
        let now = now_ms();
        let ttl_ms = ttl.as_millis() as i64;
        let mut conn = self.conn().await?;
        let before: i64 = CONNECT_SCRIPT
            .key(self.keys.presence(user))
            .arg(node)
            .arg(now)
            .arg(now + ttl_ms)
            .arg(ttl_ms * 2)
            .invoke_async(&mut conn)
            .await?;
        // One key, so a pipeline is fine on a cluster too.
        let node_users = self.keys.node_users(node);
        redis::pipe()
            .sadd(&node_users, user)
            .ignore()
            .pexpire(&node_users, ttl_ms * 10)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(before == 0)
    }

    /// Unregisters the user's last socket on `node`; `true` when no node holds the user any more
    /// (the user just went offline).
    pub async fn presence_disconnect(&self, user: UserId, node: &str) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.presence.disconnect(user, node, memory::now()));
        }
        let mut conn = self.conn().await?;
        let went_offline = self.remove_node_entry(&mut conn, user, node).await?;
        let _: i64 = redis::cmd("SREM")
            .arg(self.keys.node_users(node))
            .arg(user)
            .query_async(&mut conn)
            .await?;
        Ok(went_offline)
    }

    async fn remove_node_entry(
        &self,
        conn: &mut BusConn,
        user: UserId,
        node: &str,
    ) -> Result<bool> {
        let offline: i64 = DISCONNECT_SCRIPT
            .key(self.keys.presence(user))
            .arg(node)
            .arg(now_ms())
            .invoke_async(conn)
            .await?;
        Ok(offline == 1)
    }

    /// Refreshes this node's liveness and the expiry of each local user's entry. Entries that
    /// were removed meanwhile are not re-created (`ZADD XX`).
    pub async fn presence_heartbeat(
        &self,
        node: &str,
        users: &[UserId],
        ttl: Duration,
    ) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            memory.presence.heartbeat(node, users, ttl, memory::now());
            return Ok(());
        }
        let ttl_ms = ttl.as_millis() as i64;
        let expiry = now_ms() + ttl_ms;
        let mut liveness = vec![Cmd::new(), Cmd::new()];
        liveness[0]
            .arg("ZADD")
            .arg(self.keys.nodes())
            .arg(expiry)
            .arg(node);
        liveness[1]
            .arg("PEXPIRE")
            .arg(self.keys.node_users(node))
            .arg(ttl_ms * 10);
        let _: Vec<Value> = self.run_all(&liveness).await?;
        for chunk in users.chunks(HEARTBEAT_CHUNK) {
            let mut commands = Vec::with_capacity(chunk.len() * 2);
            for &user in chunk {
                let key = self.keys.presence(user);
                let mut refresh = Cmd::new();
                refresh
                    .arg("ZADD")
                    .arg(&key)
                    .arg("XX")
                    .arg(expiry)
                    .arg(node);
                let mut keep = Cmd::new();
                keep.arg("PEXPIRE").arg(&key).arg(ttl_ms * 2);
                commands.push(refresh);
                commands.push(keep);
            }
            let _: Vec<Value> = self.run_all(&commands).await?;
        }
        Ok(())
    }

    /// Removes this node from the registry on a clean shutdown, after its sockets are closed.
    pub async fn presence_leave(&self, node: &str) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            memory.presence.leave(node);
            return Ok(());
        }
        let mut commands = vec![Cmd::new(), Cmd::new()];
        commands[0].arg("ZREM").arg(self.keys.nodes()).arg(node);
        commands[1].arg("DEL").arg(self.keys.node_users(node));
        let _: Vec<Value> = self.run_all(&commands).await?;
        Ok(())
    }

    /// Finds nodes whose heartbeat expired, claims each (only one reaper wins a node), removes its
    /// entries and returns the users that went offline because of it.
    pub async fn reap_dead_nodes(&self) -> Result<Vec<UserId>> {
        if let Some(memory) = self.memory_backend() {
            let mut offline = Vec::new();
            for (node, users) in memory.presence.reap(memory::now()) {
                tracing::warn!(node = %node, "reaped a gateway node whose heartbeat expired");
                offline.extend(users);
            }
            return Ok(offline);
        }
        let mut conn = self.conn().await?;
        let dead: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(now_ms())
            .query_async(&mut conn)
            .await?;
        let mut offline = Vec::new();
        for node in dead {
            let claimed: i64 = redis::cmd("ZREM")
                .arg(self.keys.nodes())
                .arg(&node)
                .query_async(&mut conn)
                .await?;
            if claimed == 0 {
                continue;
            }
            let users: Vec<UserId> = redis::cmd("SMEMBERS")
                .arg(self.keys.node_users(&node))
                .query_async(&mut conn)
                .await?;
            for user in users {
                if self.remove_node_entry(&mut conn, user, &node).await? {
                    offline.push(user);
                }
            }
            let _: i64 = redis::cmd("DEL")
                .arg(self.keys.node_users(&node))
                .query_async(&mut conn)
                .await?;
            tracing::warn!(node = %node, "reaped a gateway node whose heartbeat expired");
        }
        Ok(offline)
    }

    /// Whether each user has an unexpired entry, in the order given.
    pub async fn online(&self, users: &[UserId]) -> Result<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.presence.online(users, memory::now()));
        }
        let now = now_ms();
        let commands: Vec<Cmd> = users
            .iter()
            .map(|&user| {
                let mut count = Cmd::new();
                count
                    .arg("ZCOUNT")
                    .arg(self.keys.presence(user))
                    .arg(now)
                    .arg("+inf");
                count
            })
            .collect();
        let counts: Vec<i64> = self.run_all(&commands).await?;
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }
}
