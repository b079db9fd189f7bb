//! The presence registry in Redis (see `crate::presence`).
//!
//! `P:presence:{uid}` is a sorted set of node ids scored by an expiry time that the owning node
//! refreshes with its heartbeat. A user is online while the set has an unexpired entry. The
//! first/last transitions are decided inside Lua scripts, so two nodes racing on the same user
//! cannot both (or neither) report it. A node that dies stops refreshing; the survivors reap its
//! entries and report the users that thereby went offline. Gateways register and unregister
//! users in batches: one round of commands (a pipeline on a single Redis) for the whole batch.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};

use super::RedisBus;
use crate::backend::PresenceBackend;
use crate::{Result, UserId};

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

impl RedisBus {
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
}

#[async_trait]
impl PresenceBackend for RedisBus {
    async fn presence_connect_many(
        &self,
        users: &[UserId],
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>> {
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

    async fn presence_disconnect_many(&self, users: &[UserId], node: &str) -> Result<Vec<bool>> {
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

    async fn presence_heartbeat(&self, node: &str, users: &[UserId], ttl: Duration) -> Result<()> {
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
        // ZADD XX: an entry removed meanwhile is not re-created.
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

    async fn presence_leave(&self, node: &str) -> Result<()> {
        let mut commands = vec![Cmd::new(), Cmd::new()];
        commands[0].arg("ZREM").arg(self.keys.nodes()).arg(node);
        commands[1].arg("DEL").arg(self.keys.node_users(node));
        let _: Vec<Value> = self.run_all(&commands).await?;
        Ok(())
    }

    async fn reap_dead_nodes(&self) -> Result<Vec<UserId>> {
        let mut conn = self.conn().await?;
        // Only the reaper whose ZREM removes a node goes on with it.
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

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>> {
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
