//! connect (loadtest/connect.js): ramp to two thirds of VUS, hold, ramp to VUS, hold. Each VU
//! opens one socket, authenticates (`auth_ms`: open → auth_ok; `session_auth_ms`: from creating
//! the socket), answers the server's pings (which keep an idle socket alive) and, with
//! PING_EVERY_S, sends an application `ping` too; it stays until the end. A socket the server
//! closes counts in `ws_closed_unexpected`, and the VU reconnects a second later.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use crate::args::AuthVia;
use crate::conn::{Conn, Event};
use crate::ctx::{ActiveGuard, Ctx};
use crate::frames;
use crate::metrics::name;
use crate::plan::owns;

pub async fn run(ctx: Rc<Ctx>) {
    let mut vus = Vec::new();
    for k in 0..ctx.args.vus {
        if owns(k, ctx.worker, ctx.workers) {
            vus.push(tokio::task::spawn_local(vu(ctx.clone(), k)));
        }
    }
    for v in vus {
        let _ = v.await;
    }
}

async fn vu(ctx: Rc<Ctx>, k: usize) {
    let a = &ctx.args;
    sleep_until(ctx.coarse(ctx.at(ctx.timing.vu_start(k)))).await;
    let end = ctx.at(ctx.timing.end);
    let user = &ctx.users[k % ctx.users.len()];
    let target = &ctx.targets[ctx.gateway_of(k)];
    let auth_limit = Duration::from_secs_f64(a.auth_timeout_s);
    let ping_every = (a.ping_every_s > 0.0).then(|| Duration::from_secs_f64(a.ping_every_s));
    let mut first = true;
    let mut ever_authed = false;
    loop {
        if !first {
            sleep(Duration::from_secs(1)).await; // a reconnect: no tight loop
        }
        first = false;
        if Instant::now() + Duration::from_secs(2) > end {
            return;
        }
        let started = Instant::now();
        let mut conn =
            match Conn::open(target, ctx.source_of(k), &ctx.query(user, None), auth_limit).await {
                Ok(c) => c,
                Err(e) => {
                    ctx.count_tagged(name::ERRORS, format!("kind=socket,code={}", e.code()));
                    continue;
                }
            };
        let opened = Instant::now();
        let _active = ActiveGuard::new(&ctx.active);
        if a.auth_via() == AuthVia::Frame && conn.send(frames::auth(&user.token)).await.is_err() {
            ctx.count_tagged(name::ERRORS, "kind=socket,code=write".into());
            continue;
        }
        let mut authed = false;
        let mut next_ping = ping_every.map(|p| Instant::now() + p.mul_f64(rand::random::<f64>()));
        loop {
            let mut deadline = if authed {
                end
            } else {
                (started + auth_limit).min(end)
            };
            if let Some(p) = next_ping.filter(|_| authed) {
                deadline = deadline.min(p);
            }
            tokio::select! {
                ev = conn.recv() => match ev {
                    Event::Text(bytes) => {
                        let Ok(f) = frames::parse(&bytes) else {
                            if !bytes.is_empty() {
                                ctx.count_tagged(name::ERRORS, "kind=bad_frame".into());
                            }
                            continue;
                        };
                        match f.kind.as_ref() {
                            "auth_ok" if !authed => {
                                authed = true;
                                let at = Instant::now();
                                ctx.count(name::AUTH_OK, 1.0);
                                ctx.sample(name::AUTH, "", (at - opened).as_secs_f64() * 1e3);
                                ctx.sample(name::SESSION_AUTH, "", (at - started).as_secs_f64() * 1e3);
                                if !ever_authed {
                                    ever_authed = true;
                                    ctx.count(name::AUTHED_USERS, 1.0);
                                }
                            }
                            "error" => {
                                let code = f.code.as_deref().unwrap_or("?");
                                ctx.count_tagged(name::ERRORS, format!("kind=frame,code={code}"));
                            }
                            _ => {}
                        }
                    }
                    Event::Ping(p) => {
                        let _ = conn.pong(p).await;
                    }
                    Event::Closed { code, reason } => {
                        ctx.count(name::CLOSED, 1.0);
                        let tag = code.map_or(reason, |c| c.to_string());
                        ctx.count_tagged(name::CLOSED_UNEXPECTED, format!("code={tag}"));
                        break;
                    }
                },
                _ = sleep_until(ctx.coarse(deadline)) => {
                    let now = Instant::now();
                    if now >= end {
                        conn.close(Duration::from_secs(2)).await;
                        ctx.count(name::CLOSED, 1.0);
                        return;
                    }
                    if !authed {
                        ctx.count_tagged(name::ERRORS, "kind=auth_timeout".into());
                        conn.close(Duration::from_secs(2)).await;
                        ctx.count(name::CLOSED, 1.0);
                        break;
                    }
                    if let (Some(p), Some(every)) = (next_ping, ping_every)
                        && p <= now
                    {
                        next_ping = Some(p + every);
                        let _ = conn.send(frames::ping()).await;
                    }
                }
            }
        }
    }
}
