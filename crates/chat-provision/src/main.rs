//! chat-provision: bulk-creates load-test users (and the chats a k6 scenario needs) directly in the
//! deployment's MySQL database and writes their access tokens to a JSON file.
//!
//! This is an **offline operator tool**, not a server feature: it needs `DATABASE_URL` (write
//! access to the database) and `CHAT_JWT_SECRET` (the signing secret), i.e. it can only be run by
//! someone who could already do anything to the deployment. No HTTP endpoint exists for it and no
//! server binary links it, so it opens no backdoor in production builds.
//!
//! Why not `POST /v1/auth/register` 15,000 times: every registration costs one argon2id hash
//! (~tens of ms of CPU), which would dominate a load test's setup on a small machine. Here all
//! users share ONE precomputed argon2id hash of `--password` (so they can still log in normally),
//! rows go in as multi-row prepared INSERTs of `--batch` rows inside one transaction, and tokens are
//! minted exactly as chat-api mints them (`chat_auth::TokenKeys::issue_user_token`: HS256 with
//! `sub`, `exp`, `iat`, `jti`).
//!
//! Output: a JSON array, one object per user in index order:
//! `{id, username, token, pair_chat_id?, peer_id?, group_chat_id?, group_size?}`.
//! Run it after chat-api has started once (chat-api's migrations create the schema).

mod db;
mod plan;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use chat_auth::TokenKeys;
use clap::Parser;
use serde::Serialize;

const ABOUT: &str = "Offline operator tool: bulk-creates load-test users and chats in MySQL and \
writes their tokens to a JSON file";

const LONG_ABOUT: &str = "Offline operator tool: bulk-creates load-test users (lt_<run>_<n>) and, \
optionally, a private chat per pair of consecutive users and groups of K consecutive users, directly \
in the deployment's MySQL database, then writes [{id, username, token, ...}] with tokens signed by \
the deployment's JWT secret.

It needs DATABASE_URL and CHAT_JWT_SECRET, i.e. operator access: it is not an HTTP endpoint and no \
server links it, so it is no backdoor. All users share one argon2id hash of --password, so they can \
also log in through the API. Run it after chat-api has started (chat-api creates the schema).";

#[derive(Debug, Parser)]
#[command(name = "chat-provision", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// MySQL URL of the deployment's database (the one chat-api migrated).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// The deployment's JWT signing secret (the CHAT_JWT_SECRET of chat-api and the gateways).
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,

    /// Number of users to create.
    #[arg(long, env = "CHAT_PROVISION_USERS")]
    users: usize,

    /// Run id in the usernames lt_<run>_<n>: 1-12 of a-z0-9 (default: random).
    #[arg(long, env = "CHAT_PROVISION_RUN")]
    run: Option<String>,

    /// Password of every created user (stored as one shared argon2id hash).
    #[arg(
        long,
        env = "CHAT_PROVISION_PASSWORD",
        default_value = "loadtest-password",
        hide_env_values = true
    )]
    password: String,

    /// Create a private chat for each pair of consecutive users (0-1, 2-3, ...).
    #[arg(long, env = "CHAT_PROVISION_PAIRS")]
    pairs: bool,

    /// Create groups of this many consecutive users (0: none); the first member owns the group.
    #[arg(long, env = "CHAT_PROVISION_GROUP_SIZE", default_value_t = 0)]
    group_size: usize,

    /// Lifetime of the minted tokens, in seconds.
    #[arg(long, env = "CHAT_PROVISION_TOKEN_TTL_SECS", default_value_t = 86_400)]
    token_ttl_secs: u64,

    /// Rows per multi-row INSERT.
    #[arg(long, env = "CHAT_PROVISION_BATCH", default_value_t = 1000)]
    batch: usize,

    /// How long to wait for the database and chat-api's schema, in seconds.
    #[arg(long, env = "CHAT_PROVISION_WAIT_SECS", default_value_t = 30)]
    wait_secs: u64,

    /// Where to write the users JSON (created with mode 0600: it holds tokens).
    #[arg(long, env = "CHAT_PROVISION_OUT")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct ProvisionedUser {
    id: u64,
    username: String,
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pair_chat_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_chat_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_size: Option<usize>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-provision: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let run = args.run.clone().unwrap_or_else(|| {
        let n: u32 = rand::random();
        format!("{n:08x}")
    });
    let plan = plan::plan(&run, args.users, args.pairs, args.group_size)?;
    anyhow::ensure!(
        (8..=128).contains(&args.password.chars().count()),
        "--password must be 8-128 characters (the API's rule)"
    );
    anyhow::ensure!(!args.jwt_secret.is_empty(), "CHAT_JWT_SECRET is empty");

    // The one argon2id hash every user shares, with chat-api's parameters.
    let salt = SaltString::generate(&mut OsRng);
    let password_hash = Argon2::default()
        .hash_password(args.password.as_bytes(), &salt)
        .map_err(|e| anyhow!("hashing the password: {e}"))?
        .to_string();

    let mut conn =
        db::connect_when_migrated(&args.database_url, Duration::from_secs(args.wait_secs)).await?;
    let created = db::provision(&mut conn, &run, &plan, &password_hash, args.batch).await?;

    let keys = TokenKeys::hs256(args.jwt_secret.as_bytes());
    let lifetime = Duration::from_secs(args.token_ttl_secs);
    let mut users: Vec<ProvisionedUser> = created
        .user_ids
        .iter()
        .enumerate()
        .map(|(n, &id)| -> anyhow::Result<ProvisionedUser> {
            Ok(ProvisionedUser {
                id,
                username: plan::username(&run, n),
                token: keys
                    .issue_user_token(id, lifetime)
                    .map_err(|e| anyhow!("signing a token: {e}"))?
                    .0,
                pair_chat_id: None,
                peer_id: None,
                group_chat_id: None,
                group_size: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    for (&(a, b), &chat) in plan.pairs.iter().zip(&created.pair_chat_ids) {
        let (id_a, id_b) = (users[a].id, users[b].id);
        users[a].pair_chat_id = Some(chat);
        users[a].peer_id = Some(id_b);
        users[b].pair_chat_id = Some(chat);
        users[b].peer_id = Some(id_a);
    }
    for (members, &chat) in plan.groups.iter().zip(&created.group_chat_ids) {
        for user in &mut users[members.clone()] {
            user.group_chat_id = Some(chat);
            user.group_size = Some(members.len());
        }
    }
    write_users(&args.out, &users)?;
    eprintln!(
        "chat-provision: run {run}: {} users, {} private chats, {} groups of {} in {:.2} s -> {}",
        users.len(),
        created.pair_chat_ids.len(),
        created.group_chat_ids.len(),
        args.group_size,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// One user per line, so the file is greppable; mode 0600 because it holds live tokens.
fn write_users(path: &std::path::Path, users: &[ProvisionedUser]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(b"[\n")?;
    for (i, user) in users.iter().enumerate() {
        if i > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut out, user)?;
    }
    out.write_all(b"\n]\n")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_with_env_twins_and_defaults() {
        let args = Args::try_parse_from([
            "chat-provision",
            "--database-url",
            "mysql://root@127.0.0.1/x",
            "--jwt-secret",
            "s",
            "--users",
            "10",
            "--pairs",
            "--out",
            "/tmp/u.json",
        ])
        .expect("parses");
        assert_eq!(args.users, 10);
        assert!(args.pairs);
        assert_eq!(args.group_size, 0);
        assert_eq!(args.batch, 1000);
    }

    #[test]
    fn tokens_verify_with_the_same_secret() {
        let keys = TokenKeys::hs256(b"secret");
        let (token, _) = keys
            .issue_user_token(42, Duration::from_secs(60))
            .expect("sign");
        let verified = keys.verify_user_token(&token).expect("valid");
        assert_eq!(verified.user_id, 42);
    }

    #[test]
    fn the_output_is_one_user_per_line_and_omits_absent_chats() {
        let path = std::env::temp_dir().join(format!("chat-provision-{}.json", std::process::id()));
        let users = vec![
            ProvisionedUser {
                id: 1,
                username: "lt_r_0".into(),
                token: "t0".into(),
                pair_chat_id: Some(9),
                peer_id: Some(2),
                group_chat_id: None,
                group_size: None,
            },
            ProvisionedUser {
                id: 3,
                username: "lt_r_2".into(),
                token: "t2".into(),
                pair_chat_id: None,
                peer_id: None,
                group_chat_id: None,
                group_size: None,
            },
        ];
        write_users(&path, &users).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(parsed[0]["pair_chat_id"], 9);
        assert_eq!(parsed[0]["peer_id"], 2);
        assert!(parsed[1].get("pair_chat_id").is_none());
        assert_eq!(text.lines().count(), 4);
    }
}
