//! [`PrivateRedis`]: a `redis-server` child of the test on a free port, so the suite can kill and
//! restart "Redis" without touching the shared server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports::{free_addr, pid_listens_on};
use crate::process::Proc;
use crate::redis_target::{RedisMode, RedisTarget, connect};

/// A `redis-server` owned by the test (no persistence), on a free port, that can be killed and
/// started again on the same port.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    script: PathBuf,
    proc: Option<Proc>,
    starts: usize,
}

impl std::fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

impl PrivateRedis {
    /// Starts `redis-server --port <free> --save "" --appendonly no` and waits for PING.
    ///
    /// Call it from the test's own task: the server dies with the thread that spawned it.
    pub async fn start() -> anyhow::Result<PrivateRedis> {
        let port = free_addr()?.port();
        let dir = std::env::temp_dir()
            .join("chat-testkit")
            .join(format!("chaos-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Proc::spawn takes no arguments, so a two-line script carries them (`exec` keeps the
        // pid, and with it the parent-death signal).
        let script = dir.join("redis-server.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec redis-server --port \"$CHAOS_REDIS_PORT\" --bind 127.0.0.1 \
             --save '' --appendonly no --daemonize no --dir \"$CHAOS_REDIS_DIR\"\n",
        )
        .with_context(|| format!("writing {}", script.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", script.display()))?;
        }
        let mut redis = PrivateRedis {
            port,
            dir,
            script,
            proc: None,
            starts: 0,
        };
        redis.spawn_and_wait().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The target to give [`crate::StackOptions::redis`].
    pub fn target(&self) -> RedisTarget {
        RedisTarget {
            mode: RedisMode::Standalone,
            urls: vec![self.url()],
        }
    }

    /// SIGKILLs the server (a crash; every key is gone since nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts the server again on the same port and waits for PING.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let env = vec![
            ("CHAOS_REDIS_PORT".to_string(), self.port.to_string()),
            (
                "CHAOS_REDIS_DIR".to_string(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ];
        let name = format!("redis-server-{}", self.starts);
        // A freshly written script can be "busy" for a moment if another thread forked while
        // it was open: retry that.
        let mut proc = None;
        for _ in 0..20 {
            match Proc::spawn(&name, &self.script, &env, &self.dir) {
                Ok(p) => {
                    proc = Some(p);
                    break;
                }
                Err(e) if format!("{e:#}").contains("busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut proc = proc.context("redis-server script stayed busy")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !proc.is_running() {
                bail!(
                    "redis-server {} (is redis-server installed?); log:\n{}",
                    proc.describe_exit(),
                    proc.log_tail(20)
                );
            }
            if ping(&self.url()).await.is_ok() && pid_listens_on(proc.pid(), self.port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within 10 s; log:\n{}",
                    self.port,
                    proc.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn ping(url: &str) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
