//! churn (loadtest/churn.js): sessions arrive at a ramping rate; each connects (`?token=` by
//! default), authenticates (`session_auth_ms`: from creating the socket to `auth_ok`), sends MSGS
//! messages to its pair chat spread over SESSION_S, must see each come back as `new_message`
//! (waiting up to ECHO_GRACE_S at the close for echoes an ack overtook), and closes. The
//! partner's messages count as received when it is online. A refused send goes again with the
//! same client_msg_id after a backoff.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::conn::{Conn, Event};
use crate::ctx::{ActiveGuard, Ctx, now_us, retry_delay, retryable};
use crate::frames;
use crate::metrics::name;
use crate::plan::{arrival_times, owns};

pub async fn run(ctx: Rc<Ctx>) {
    let times = arrival_times(&ctx.timing.rate_stages);
    // Each worker caps its share of the concurrent sessions (k6's maxVUs).
    let cap = (ctx.args.vus.div_ceil(ctx.workers)) as u64;
    let mut sessions = Vec::new();
    for (i, t) in times.iter().enumerate() {
        if !owns(i, ctx.worker, ctx.workers) {
            continue;
        }
        sleep_until(ctx.coarse(ctx.at(*t))).await;
        if ctx.active.get() >= cap {
            ctx.count(name::DROPPED_ITERATIONS, 1.0);
            continue;
        }
        sessions.push(tokio::task::spawn_local(session(ctx.clone(), i)));
    }
    for s in sessions {
        let _ = s.await;
    }
}

struct Pending {
    req: u32,
    msg: u32,
    sent_us: u64,
    attempts: u32,
    /// Waiting for its retry: not on the wire.
    retry_at: Option<Instant>,
}

async fn session(ctx: Rc<Ctx>, i: usize) {
    let _active = ActiveGuard::new(&ctx.active);
    let idx = i % ctx.users.len();
    let user = &ctx.users[idx];
    let Some(chat) = user.pair_chat_id else {
        ctx.count_tagged(name::ERRORS, "kind=no_pair_chat".into());
        ctx.count(name::SESSIONS_FAILED, 1.0);
        return;
    };
    let a = &ctx.args;
    let started = Instant::now();
    let auth_limit = Duration::from_secs_f64(a.auth_timeout_s);
    let gw = ctx.gateway_of(idx);
    let mut conn = match Conn::open(
        &ctx.targets[gw],
        ctx.source_of(i),
        &ctx.query(user, None),
        auth_limit,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            ctx.count_tagged(name::ERRORS, format!("kind=socket,code={}", e.code()));
            ctx.count(name::SESSIONS_FAILED, 1.0);
            return;
        }
    };
    if a.auth_via() == crate::args::AuthVia::Frame
        && conn.send(frames::auth(&user.token)).await.is_err()
    {
        ctx.count_tagged(name::ERRORS, "kind=socket,code=write".into());
        ctx.count(name::SESSIONS_FAILED, 1.0);
        return;
    }
    let session_len = Duration::from_secs_f64(a.session_s);
    let msgs = a.msgs;
    let mut authed = false;
    let mut next_send = 1u32; // which of the MSGS sends is next
    let mut req = 0u32;
    let mut pending: Vec<Pending> = Vec::new();
    // Messages acked whose echo has not come yet, and echoes still expected at all.
    let mut echo_due: Vec<u32> = Vec::new(); // msg numbers sent, echo not seen
    let mut acked: Vec<u32> = Vec::new();
    let mut ending_since: Option<Instant> = None;
    let grace = Duration::from_secs_f64(a.echo_grace_s);
    let missing = |echo_due: &Vec<u32>, acked: &Vec<u32>| {
        echo_due.iter().filter(|m| acked.contains(m)).count()
    };

    let closed_by_server = loop {
        // The next thing to do on a timer.
        let deadline = if !authed {
            started + auth_limit
        } else if let Some(since) = ending_since {
            since + grace
        } else {
            let mut d = started + session_len;
            if next_send <= msgs {
                d = d.min(started + session_len * next_send / (msgs + 1));
            }
            for p in &pending {
                if let Some(at) = p.retry_at {
                    d = d.min(at);
                }
            }
            d
        };
        tokio::select! {
            ev = conn.recv() => match ev {
                Event::Text(bytes) => {
                    let recv_us = now_us();
                    let Ok(f) = frames::parse(&bytes) else {
                        if !bytes.is_empty() {
                            ctx.count_tagged(name::ERRORS, "kind=bad_frame".into());
                        }
                        continue;
                    };
                    match f.kind.as_ref() {
                        "auth_ok" if !authed => {
                            authed = true;
                            ctx.count(name::AUTH_OK, 1.0);
                            ctx.sample(name::SESSION_AUTH, "", started.elapsed().as_secs_f64() * 1e3);
                        }
                        "ack" => {
                            let Some(pos) = f.id.as_deref().and_then(|id| id.strip_prefix('r'))
                                .and_then(|n| n.parse::<u32>().ok())
                                .and_then(|r| pending.iter().position(|p| p.req == r && p.retry_at.is_none())) else { continue };
                            let p = pending.swap_remove(pos);
                            ctx.count(name::ACKED, 1.0);
                            ctx.sample(name::SEND_ACK, "", (recv_us.saturating_sub(p.sent_us)) as f64 / 1e3);
                            acked.push(p.msg);
                        }
                        "new_message" => {
                            let Some(m) = f.message else { continue };
                            if m.chat_id != chat {
                                continue;
                            }
                            let sent = m.sent_at_us();
                            if m.sender_id == user.id {
                                // Ours: "ch-<worker>-<i>-<msg>"; another session of this user is not.
                                let Some(msg) = m.client_msg_id.as_deref().and_then(|c| own_msg(c, ctx.worker, i)) else { continue };
                                let Some(pos) = echo_due.iter().position(|x| *x == msg) else { continue };
                                echo_due.swap_remove(pos);
                                if let Some(s) = sent {
                                    ctx.sample(name::DELIVERY, "path=echo", recv_us.saturating_sub(s) as f64 / 1e3);
                                }
                                if ending_since.is_some() && missing(&echo_due, &acked) == 0 {
                                    break false;
                                }
                            } else {
                                ctx.count(name::RECEIVED, 1.0);
                                if let Some(s) = sent {
                                    ctx.sample(name::DELIVERY, "path=peer", recv_us.saturating_sub(s) as f64 / 1e3);
                                }
                            }
                        }
                        "error" => {
                            let code = f.code.as_deref().unwrap_or("?").to_string();
                            let pos = f.id.as_deref().and_then(|id| id.strip_prefix('r'))
                                .and_then(|n| n.parse::<u32>().ok())
                                .and_then(|r| pending.iter().position(|p| p.req == r && p.retry_at.is_none()));
                            match pos {
                                Some(pos) if retryable(&code) => {
                                    ctx.count_tagged(name::REFUSED, format!("code={code}"));
                                    let p = &mut pending[pos];
                                    p.retry_at = Some(Instant::now() + retry_delay(p.attempts));
                                }
                                Some(pos) => {
                                    let p = pending.swap_remove(pos);
                                    echo_due.retain(|m| *m != p.msg);
                                    ctx.count_tagged(name::ERRORS, format!("kind=frame,code={code}"));
                                }
                                None => ctx.count_tagged(name::ERRORS, format!("kind=frame,code={code}")),
                            }
                        }
                        _ => {}
                    }
                }
                Event::Ping(p) => {
                    let _ = conn.pong(p).await;
                }
                Event::Closed { code, reason } => {
                    let tag = code.map_or(reason, |c| c.to_string());
                    ctx.count_tagged(name::CLOSED_UNEXPECTED, format!("code={tag}"));
                    if !authed {
                        ctx.count(name::SESSIONS_FAILED, 1.0);
                    }
                    break true;
                }
            },
            _ = sleep_until(ctx.coarse(deadline)) => {
                let now = Instant::now();
                if !authed {
                    ctx.count_tagged(name::ERRORS, "kind=auth_timeout".into());
                    ctx.count(name::SESSIONS_FAILED, 1.0);
                    break false;
                }
                if ending_since.is_some() {
                    break false; // the grace is over
                }
                if now >= started + session_len {
                    ending_since = Some(now);
                    if missing(&echo_due, &acked) == 0 {
                        break false;
                    }
                    continue;
                }
                if next_send <= msgs && now >= started + session_len * next_send / (msgs + 1) {
                    req += 1;
                    let msg = next_send;
                    next_send += 1;
                    let sent_us = now_us();
                    let cmid = format!("ch-{}-{i}-{msg}", ctx.worker);
                    if conn.send(frames::send(&format!("r{req}"), chat, &cmid, sent_us)).await.is_ok() {
                        ctx.count(name::SENT, 1.0);
                        echo_due.push(msg);
                        pending.push(Pending { req, msg, sent_us, attempts: 1, retry_at: None });
                    }
                }
                for p in pending.iter_mut() {
                    if p.retry_at.is_some_and(|at| at <= now) {
                        req += 1;
                        p.req = req;
                        p.attempts += 1;
                        p.retry_at = None;
                        let cmid = format!("ch-{}-{i}-{}", ctx.worker, p.msg);
                        let _ = conn.send(frames::send(&format!("r{req}"), chat, &cmid, p.sent_us)).await;
                    }
                }
            }
        }
    };
    // The books of this churn session (one socket, its messages and echoes).
    if !pending.is_empty() {
        ctx.count(name::UNACKED, pending.len() as f64);
    }
    let lost = missing(&echo_due, &acked);
    if lost > 0 {
        ctx.count(name::LOST, lost as f64);
    }
    ctx.count(name::CLOSED, 1.0);
    if !closed_by_server {
        ctx.count(name::SESSIONS_COMPLETED, 1.0);
        conn.close(Duration::from_secs(2)).await;
    }
}

/// The message number in one of this churn session's client_msg_ids.
fn own_msg(cmid: &str, worker: usize, i: usize) -> Option<u32> {
    let mut parts = cmid.strip_prefix("ch-")?.split('-');
    let (w, s, m) = (parts.next()?, parts.next()?, parts.next()?);
    if w.parse::<usize>().ok()? != worker || s.parse::<usize>().ok()? != i {
        return None;
    }
    m.parse().ok()
}
