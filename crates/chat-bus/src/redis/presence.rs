//! The presence registry: which gateway nodes hold sockets of which users.
//!
//! `P:presence:{uid}` is a sorted set of node ids scored by an expiry time that the owning node
//! refreshes with its heartbeat. A user is online while the set has an unexpired entry. The
//! first/last transitions are decided inside Lua scripts, so two nodes racing on the same user
//! cannot both (or neither) report it. A node that dies stops refreshing; the survivors reap its
//! entries and report the users that thereby went offline. Gateways register and unregister
//! users in batches: one round of commands (a pipeline on a single Redis) for the whole batch.

use std::time::Duration;

use redis::{Cmd, Value};

use crate::{Bus, Result, UserId, memory};

/// Removes expired entries and adds this node; answers 1 when the user had no unexpired entry
/// before (came online), else 0.
const CONNECT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if before == 0 then
  return 1
end
return 0
";

/// Removes a node's entry; answers 1 when that made the user go offline, else 0.
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

/// Users per round of commands (registration, heartbeat, reaping): bounds a pipeline's size.
const ROUND: usize = 1000;

/// One of the scripts above on one user's key. `EVAL` rather than `EVALSHA`: a pipeline cannot
/// load a missing script half way through, and the server finds its compiled script by the
/// text's hash either way.
fn script_call(script: &str, key: &str) -> Cmd {
    let mut call = Cmd::new();
    call.arg("EVAL").arg(script).arg(1).arg(key);
    call
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Bus {
    /// Registers the user's first socket on `node`; `true` when the user had no socket anywhere
    /// (the user just came online).
    pub async fn presence_connect(&self, user: UserId, node: &str, ttl: Duration) -> Result<bool> {
        let came_online = self.presence_connect_many(&[user], node, ttl).await?;
        Ok(came_online == [true])
    }

    /// Registers the first socket on `node` of each user; answers, in the order given, whether
    /// each user had no socket anywhere before (came online).
    pub async fn presence_connect_many(
        &self,
        users: &[UserId],
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>> {
        if let Some(memory) = self.memory_backend() {
            let now = memory::now();
            return Ok(users
                .iter()
                .map(|&user| memory.presence.connect(user, node, ttl, now))
                .collect());
        }
        let now = now_ms();
        let ttl_ms = ttl.as_millis() as i64;
        let node_users = self.keys.node_users(node);
        let mut came_online = Vec::with_capacity(users.len());
        for round in users.chunks(ROUND) {
            let mut commands: Vec<Cmd> = round
                .iter()
                .map(|&user| {
                    let mut call = script_call(CONNECT, &self.keys.presence(user));
                    call.arg(node).arg(now).arg(now + ttl_ms).arg(ttl_ms * 2);
                    call
                })
                .collect();
            let mut add = Cmd::new();
            add.arg("SADD").arg(&node_users).arg(round);
            let mut expire = Cmd::new();
            expire.arg("PEXPIRE").arg(&node_users).arg(ttl_ms * 10);
            commands.extend([add, expire]);
            came_online.extend(self.run_scripts(&commands, round.len()).await?);
        }
        Ok(came_online)
    }

    /// Unregisters the user's last socket on `node`; `true` when no node holds the user any more
    /// (the user just went offline).
    pub async fn presence_disconnect(&self, user: UserId, node: &str) -> Result<bool> {
        let went_offline = self.presence_disconnect_many(&[user], node).await?;
        Ok(went_offline == [true])
    }

    /// Unregisters the last socket on `node` of each user; answers, in the order given, whether
    /// no node holds each user any more (went offline).
    pub async fn presence_disconnect_many(
        &self,
        users: &[UserId],
        node: &str,
    ) -> Result<Vec<bool>> {
        if let Some(memory) = self.memory_backend() {
            let now = memory::now();
            return Ok(users
                .iter()
                .map(|&user| memory.presence.disconnect(user, node, now))
                .collect());
        }
        let node_users = self.keys.node_users(node);
        let mut went_offline = Vec::with_capacity(users.len());
        for round in users.chunks(ROUND) {
            let mut commands = self.removals(round, node);
            let mut forget = Cmd::new();
            forget.arg("SREM").arg(&node_users).arg(round);
            commands.push(forget);
            went_offline.extend(self.run_scripts(&commands, round.len()).await?);
        }
        Ok(went_offline)
    }

    /// DISCONNECT of `node`'s entry for each user.
    fn removals(&self, users: &[UserId], node: &str) -> Vec<Cmd> {
        let now = now_ms();
        users
            .iter()
            .map(|&user| {
                let mut call = script_call(DISCONNECT, &self.keys.presence(user));
                call.arg(node).arg(now);
                call
            })
            .collect()
    }

    /// Runs a round of commands that all answer integers, the first `scripts` of them calls of
    /// CONNECT or DISCONNECT; their answers as booleans.
    async fn run_scripts(&self, commands: &[Cmd], scripts: usize) -> Result<Vec<bool>> {
        let replies: Vec<i64> = self.run_all(commands).await?;
        Ok(replies.iter().take(scripts).map(|&n| n == 1).collect())
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
        for chunk in users.chunks(ROUND) {
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
            let node_users = self.keys.node_users(&node);
            let users: Vec<UserId> = redis::cmd("SMEMBERS")
                .arg(&node_users)
                .query_async(&mut conn)
                .await?;
            for round in users.chunks(ROUND) {
                let went_offline = self
                    .run_scripts(&self.removals(round, &node), round.len())
                    .await?;
                offline.extend(
                    round
                        .iter()
                        .zip(went_offline)
                        .filter(|(_, gone)| *gone)
                        .map(|(&u, _)| u),
                );
            }
            let _: i64 = redis::cmd("DEL")
                .arg(&node_users)
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
