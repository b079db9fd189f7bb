//! Child processes of a test: spawned with their output in log files, tied to the test's life
//! with `PR_SET_PDEATHSIG`, stopped with SIGTERM or SIGKILL.

// The workspace denies unsafe code. This module alone needs it, for two libc calls that have no
// safe wrapper in std: `prctl(PR_SET_PDEATHSIG)` in the child between fork and exec, and
// `kill(pid, SIGTERM)`. Both are used exactly as their man pages describe.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Exit code of a child that found its parent gone before exec (see `Proc::spawn`).
pub(crate) const PARENT_GONE_EXIT_CODE: i32 = 121;
const PARENT_GONE_NOTE: &str = "chat-testkit: the parent changed between fork and exec\n";

/// A running service binary.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `binary` with `env` (on top of the inherited environment), stdout and stderr going
    /// to `<log_dir>/<name>.log`. The child gets SIGKILL if the spawning thread dies, so a test
    /// that panics or is killed leaves no process behind.
    pub(crate) fn spawn(
        name: &str,
        binary: &Path,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("creating log file {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let mut command = Command::new(binary);
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe functions prctl, getppid and _exit.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                // Say so in the log (stdio is already redirected here) with an exit code of
                // our own, so the harness can tell this from the service failing.
                if libc::getppid() != parent {
                    let note = PARENT_GONE_NOTE.as_bytes();
                    libc::write(2, note.as_ptr().cast(), note.len());
                    libc::_exit(PARENT_GONE_EXIT_CODE);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log_path,
            exited: None,
        })
    }

    /// The exit status if the process has ended.
    pub(crate) fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Whether an exit was already observed (e.g. it was killed on purpose), without checking again.
    pub(crate) fn known_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// Whether the process still runs.
    pub(crate) fn is_running(&mut self) -> bool {
        self.try_exited().is_none()
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if self.is_running() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that. Returns the exit
    /// status and whether the process ended by itself within `grace`.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if !self.is_running() {
            return (self.exited, true);
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (so it is not reused).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                return (Some(status), true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (self.kill(), false)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file of this process.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the process's output.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        // Lossy: a stray invalid byte must not hide the whole log from a failure message.
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// Whether the process ended before running any code of the service: it exited without
    /// writing a byte, or the pre-exec check stopped it. Such a start is worth retrying.
    pub(crate) fn died_before_start(&mut self) -> bool {
        if self.is_running() {
            return false;
        }
        let parent_gone = self.exited.and_then(|s| s.code()) == Some(PARENT_GONE_EXIT_CODE);
        let silent = std::fs::metadata(&self.log_path).is_ok_and(|m| m.len() == 0);
        parent_gone || silent
    }

    /// A short description of how the process ended, as of the last check.
    pub(crate) fn describe_exit(&self) -> String {
        match self.exited {
            None => "still running".to_string(),
            Some(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("ended: {status}"),
            },
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
