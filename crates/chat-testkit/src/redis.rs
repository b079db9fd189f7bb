//! Just enough of the Redis protocol to check that Redis answers and to delete a stack's keys.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The Redis URL the stacks use: `CHAT_TEST_REDIS_URL` or `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a `redis://[user@]host:port[/db]` URL.
fn redis_addr(url: &str) -> String {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    }
}

/// Sends one command and returns the first line of the reply (enough for `PING`, `EVAL` returning
/// an integer, and errors).
pub(crate) async fn command(url: &str, args: &[&str]) -> anyhow::Result<String> {
    let addr = redis_addr(url);
    let io = async {
        let stream = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        let mut stream = BufReader::new(stream);
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        anyhow::Ok(line.trim_end().to_string())
    };
    let line = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .context("Redis did not answer within 5 s")??;
    if let Some(err) = line.strip_prefix('-') {
        bail!("Redis error: {err}");
    }
    Ok(line)
}

/// Fails unless Redis answers `PING`.
pub(crate) async fn ping(url: &str) -> anyhow::Result<()> {
    let reply = command(url, &["PING"]).await?;
    if reply != "+PONG" {
        bail!("unexpected PING reply {reply:?}");
    }
    Ok(())
}

/// Deletes every key starting with `prefix:` (server side, in one Lua script).
pub(crate) async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    const SCRIPT: &str = "local c = '0' repeat \
        local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000) c = r[1] \
        for _, k in ipairs(r[2]) do redis.call('UNLINK', k) end \
        until c == '0' return 0";
    let pattern = format!("{prefix}:*");
    command(url, &["EVAL", SCRIPT, "0", &pattern]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redis_addr;

    #[test]
    fn parses_addresses() {
        assert_eq!(redis_addr("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redis_addr("redis://u:p@h:7000/2"), "h:7000");
        assert_eq!(redis_addr("redis://h"), "h:6379");
    }
}
