//! chat (loadtest/chat.js) and storm. Users come in pairs sharing a private chat (2k, 2k+1, on
//! different gateways) and, when provisioned with groups, in groups; each sends a message
//! carrying its send time (µs since the epoch) to its pair chat every SEND_EVERY_S and to its
//! group every GROUP_SEND_EVERY_S, inside the sending window. Receivers record
//! `chat_delivery_ms`; loss is counted by seq gaps per chat at the end and by totals (received
//! from others = Σ acked × (members − 1)) in the summary.
//!
//! Like an app, a client re-sends a refused send with the same client_msg_id after a backoff,
//! and when its socket ends early it reconnects with `?since=<last cursor>` and re-sends what was
//! not acked. At the end every client asks for a replay from its last cursor (spread over
//! FINAL_SPREAD_S) and closes once it is done and quiet, so a message still on its way counts as
//! late, not lost.
//!
//! A client owes itself a replay from the cursor it held when a session ended, until a `synced`
//! settles it: a reconnect (or a refused socket) asks again from that cursor, and a replay
//! refused as `unavailable` is asked again with a `resume` frame after a backoff, however far
//! live events moved on meanwhile. A client still owed one at the end goes on reconnecting
//! through the final replays' window, so what it never saw counts as lost only if the server
//! never gave it.
//!
//! storm adds a gateway killed at KILL_AT_S (by the coordinator): each dropped client waits a
//! random 0–RECONNECT_JITTER_S, reconnects to another gateway and resumes; `resume_ms` is the
//! time from noticing the drop to the `synced` of the replay, across any further drops and
//! refusals on the way. Deliveries are tagged `client=stayed` for the clients that never
//! dropped, whose live latency is what the kill cost the others.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use crate::args::{AuthVia, Scenario};
use crate::conn::{Conn, Event};
use crate::ctx::{ActiveGuard, Ctx, now_us, retry_delay, retryable};
use crate::frames;
use crate::metrics::name;
use crate::plan::owns;
use crate::scenario::books::Book;

pub async fn run(ctx: Rc<Ctx>) {
    let mut clients = Vec::new();
    for k in 0..ctx.args.vus {
        if owns(k, ctx.worker, ctx.workers) {
            clients.push(tokio::task::spawn_local(client(ctx.clone(), k)));
        }
    }
    if ctx.args.scenario == Scenario::Storm
        && let Some(at) = ctx.timing.kill_at
    {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            sleep_until(ctx.at(at)).await;
            let g = ctx.args.kill_gateway.saturating_sub(1);
            if let Some(d) = ctx.dead.borrow_mut().get_mut(g) {
                *d = true;
            }
        });
    }
    for c in clients {
        let _ = c.await;
    }
}

/// A send not acked yet: on the wire (`req`), or waiting for a retry or the next session.
struct Out {
    chat: u64,
    cmid: String,
    sent_us: u64,
    attempts: u32,
    req: Option<u32>,
    retry_at: Option<Instant>,
}

/// The delivery tags: chat kind x how it came x (storm) whether the receiver ever dropped.
fn delivery_tags(group: bool, via: usize, storm: bool, dropped: bool) -> &'static str {
    const CHAT: [[&str; 3]; 2] = [
        [
            "chat=pair,via=live",
            "chat=pair,via=replay",
            "chat=pair,via=final",
        ],
        [
            "chat=group,via=live",
            "chat=group,via=replay",
            "chat=group,via=final",
        ],
    ];
    const STORM: [[[&str; 3]; 2]; 2] = [
        [
            [
                "chat=pair,via=live,client=stayed",
                "chat=pair,via=replay,client=stayed",
                "chat=pair,via=final,client=stayed",
            ],
            [
                "chat=group,via=live,client=stayed",
                "chat=group,via=replay,client=stayed",
                "chat=group,via=final,client=stayed",
            ],
        ],
        [
            [
                "chat=pair,via=live,client=dropped",
                "chat=pair,via=replay,client=dropped",
                "chat=pair,via=final,client=dropped",
            ],
            [
                "chat=group,via=live,client=dropped",
                "chat=group,via=replay,client=dropped",
                "chat=group,via=final,client=dropped",
            ],
        ],
    ];
    if storm {
        STORM[dropped as usize][group as usize][via]
    } else {
        CHAT[group as usize][via]
    }
}

const LIVE: usize = 0;
const REPLAY: usize = 1;
const FINAL: usize = 2;

async fn client(ctx: Rc<Ctx>, k: usize) {
    let a = &ctx.args;
    let t = &ctx.timing;
    let storm = a.scenario == Scenario::Storm;
    sleep_until(ctx.coarse(ctx.at(t.vu_start(k)))).await;
    let user = &ctx.users[k % ctx.users.len()];
    let mut books: Vec<Book> = Vec::new();
    if let Some(c) = user.pair_chat_id {
        books.push(Book::new(c, 2, "pair"));
    }
    if let Some(c) = user.group_chat_id {
        books.push(Book::new(c, user.group_size.unwrap_or(2), "group"));
    }
    let end = ctx.at(t.end);
    // A client still owed a replay keeps reconnecting until the final replays are over.
    let catch_up_until =
        end + Duration::from_secs_f64(a.final_spread_s.max(0.0) + a.final_sync_timeout_s.max(0.0));
    let send_until = ctx.at(t.send_until);
    let auth_limit = Duration::from_secs_f64(a.auth_timeout_s);
    let pair_every = Duration::from_secs_f64(a.send_every_s.max(0.0));
    let group_every = Duration::from_secs_f64(a.group_send_every_s.max(0.0));
    let first = |every: Duration| {
        ctx.at(t.send_from).max(Instant::now()) + every.mul_f64(rand::random::<f64>())
    };
    let mut next_pair =
        (user.pair_chat_id.is_some() && !pair_every.is_zero()).then(|| first(pair_every));
    let mut next_group =
        (user.group_chat_id.is_some() && !group_every.is_zero()).then(|| first(group_every));

    let mut gw = ctx.gateway_of(k);
    let mut cursor: Option<String> = None;
    // The cursor of the last session's end while its replay is still owed (no `synced` yet).
    let mut owed: Option<String> = None;
    let mut resume_attempts = 0u32;
    let mut outbox: Vec<Out> = Vec::new();
    let mut req = 0u32;
    let mut msg_no = 0u32;
    let mut session_no = 0u32;
    let mut dropped_at: Option<Instant> = None;
    let mut ever_dropped = false;
    let mut ever_authed = false;

    'sessions: loop {
        if session_no > 0 {
            let now = Instant::now();
            if (owed.is_none() && now + Duration::from_secs(2) >= end) || now >= catch_up_until {
                break;
            }
            let wait = if dropped_at.is_some() && storm {
                Duration::from_secs_f64(a.reconnect_jitter_s.max(0.0) * rand::random::<f64>())
            } else {
                Duration::from_secs(1)
            };
            sleep(wait).await;
        }
        session_no += 1;
        let since = (session_no > 1).then(|| {
            owed.get_or_insert_with(|| cursor.clone().unwrap_or_else(|| "c0".into()))
                .clone()
        });
        let started = Instant::now();
        let mut conn = match Conn::open(
            &ctx.targets[gw],
            ctx.source_of(k),
            &ctx.query(user, since.as_deref()),
            auth_limit,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                ctx.count_tagged(name::ERRORS, format!("kind=socket,code={}", e.code()));
                if storm {
                    gw = ctx.other_gateway(gw);
                }
                continue 'sessions;
            }
        };
        let opened = Instant::now();
        let _active = ActiveGuard::new(&ctx.active);
        if a.auth_via() == AuthVia::Frame && conn.send(frames::auth(&user.token)).await.is_err() {
            ctx.count_tagged(name::ERRORS, "kind=socket,code=write".into());
            continue 'sessions;
        }
        let mut replaying = since.is_some();
        if replaying {
            ctx.count(name::RESUMED, 1.0);
        }
        let mut authed = false;
        let mut final_at: Option<Instant> = None; // when to ask for the final replay
        let mut final_asked = false;
        let mut final_attempts = 0u32;
        let mut final_deadline: Option<Instant> = None;
        let mut resume_at: Option<Instant> = None; // when to ask again for a refused replay
        let mut quiet_until: Option<Instant> = None;
        let mut leave_at: Option<Instant> = None; // RECONNECT_EVERY_S
        let mut ended_by_us = false;
        let mut end_seen = false;

        loop {
            let mut deadline = if authed {
                Instant::now() + Duration::from_secs(3600)
            } else {
                started + auth_limit
            };
            if authed {
                if !end_seen {
                    deadline = deadline.min(end);
                }
                for n in [
                    next_pair,
                    next_group,
                    final_at,
                    final_deadline,
                    resume_at,
                    quiet_until,
                    leave_at,
                ]
                .into_iter()
                .flatten()
                {
                    deadline = deadline.min(n);
                }
                for o in &outbox {
                    if let Some(r) = o.retry_at {
                        deadline = deadline.min(r);
                    }
                }
            }
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
                                let at = Instant::now();
                                ctx.count(name::AUTH_OK, 1.0);
                                ctx.sample(name::AUTH, "", (at - opened).as_secs_f64() * 1e3);
                                ctx.sample(name::SESSION_AUTH, "", (at - started).as_secs_f64() * 1e3);
                                if !ever_authed {
                                    ever_authed = true;
                                    ctx.count(name::AUTHED_USERS, 1.0);
                                }
                                // What the last session left unacked goes again, same client_msg_id.
                                for o in outbox.iter_mut().filter(|o| o.retry_at.is_none()) {
                                    req += 1;
                                    o.req = Some(req);
                                    o.attempts += 1;
                                    let _ = conn.send(frames::send(&format!("r{req}"), o.chat, &o.cmid, o.sent_us)).await;
                                }
                                if a.reconnect_every_s > 0.0 {
                                    leave_at = Some(at + Duration::from_secs_f64(a.reconnect_every_s * (0.5 + rand::random::<f64>())));
                                }
                            }
                            "new_message" => {
                                if let Some(c) = f.cursor.as_deref() {
                                    cursor = Some(c.to_string());
                                }
                                let Some(m) = f.message else { continue };
                                let Some(book) = books.iter_mut().find(|b| b.chat == m.chat_id) else { continue };
                                let fresh = book.note(m.seq);
                                if quiet_until.is_some() {
                                    quiet_until = Some(Instant::now() + Duration::from_millis(a.final_quiet_ms));
                                }
                                if !fresh {
                                    // A replay may repeat what the last session saw (protocol, Sync and resume).
                                    if !replaying {
                                        ctx.count(name::DUPLICATE, 1.0);
                                    }
                                    continue;
                                }
                                if m.sender_id != user.id {
                                    let group = book.kind == "group";
                                    ctx.count_tagged(name::RECEIVED, format!("chat={}", book.kind));
                                    if final_asked {
                                        ctx.count_tagged(name::LATE, format!("chat={}", book.kind));
                                    }
                                    let via = if final_asked { FINAL } else if replaying { REPLAY } else { LIVE };
                                    if let Some(s) = m.sent_at_us() {
                                        ctx.sample(name::DELIVERY, delivery_tags(group, via, storm, ever_dropped), recv_us.saturating_sub(s) as f64 / 1e3);
                                    }
                                }
                            }
                            "message_read" => {
                                if let Some(c) = f.cursor.as_deref() {
                                    cursor = Some(c.to_string());
                                }
                            }
                            "synced" => {
                                if let Some(c) = f.cursor.as_deref() {
                                    cursor = Some(c.to_string());
                                }
                                replaying = false;
                                owed = None;
                                resume_attempts = 0;
                                if let Some(d) = dropped_at.take() {
                                    ctx.sample(name::RESUME, "", d.elapsed().as_secs_f64() * 1e3);
                                    ctx.sample(name::RESUME_RECONNECT, "", started.elapsed().as_secs_f64() * 1e3);
                                }
                                if final_asked {
                                    quiet_until = Some(Instant::now() + Duration::from_millis(a.final_quiet_ms));
                                }
                            }
                            "ack" => {
                                let Some(r) = f.id.as_deref().and_then(|id| id.strip_prefix('r')).and_then(|n| n.parse::<u32>().ok()) else { continue };
                                let Some(pos) = outbox.iter().position(|o| o.req == Some(r) && o.retry_at.is_none()) else { continue };
                                let o = outbox.swap_remove(pos);
                                ctx.count(name::ACKED, 1.0);
                                ctx.sample(name::SEND_ACK, "", recv_us.saturating_sub(o.sent_us) as f64 / 1e3);
                                if let Some(book) = books.iter_mut().find(|b| b.chat == o.chat) {
                                    ctx.rec.borrow_mut().add_tagged(name::EXPECTED, format!("chat={}", book.kind), (book.members.saturating_sub(1)) as f64);
                                    if let Some(m) = f.message {
                                        book.note_max(m.seq);
                                    }
                                }
                            }
                            "error" => {
                                let code = f.code.as_deref().unwrap_or("?").to_string();
                                let pos = f.id.as_deref().and_then(|id| id.strip_prefix('r')).and_then(|n| n.parse::<u32>().ok())
                                    .and_then(|r| outbox.iter().position(|o| o.req == Some(r) && o.retry_at.is_none()));
                                if pos.is_none() && f.id.is_none() && final_asked && replaying && retryable(&code) {
                                    // The final replay was refused (the api is busy with everyone's): ask again.
                                    ctx.count_tagged(name::REPLAYS_REFUSED, format!("code={code}"));
                                    replaying = false;
                                    final_asked = false;
                                    final_at = Some(Instant::now() + retry_delay(final_attempts));
                                    continue;
                                }
                                if pos.is_none() && f.id.is_none() && !authed && retryable(&code) {
                                    // Refused before auth_ok (the gateway could not subscribe in time); the
                                    // close that follows makes the client reconnect.
                                    ctx.count_tagged(name::AUTH_REFUSED, format!("code={code}"));
                                    continue;
                                }
                                if pos.is_none() && f.id.is_none() && authed && replaying && !final_asked {
                                    // The resume's replay was refused: the live events flow now, but the
                                    // gap before them is still owed; ask for it again from the same cursor.
                                    replaying = false;
                                    if retryable(&code) {
                                        ctx.count_tagged(name::RESUMES_REFUSED, format!("code={code}"));
                                        resume_attempts += 1;
                                        resume_at = Some(Instant::now() + retry_delay(resume_attempts));
                                    } else {
                                        ctx.count_tagged(name::ERRORS, format!("kind=resume,code={code}"));
                                        owed = None;
                                    }
                                    continue;
                                }
                                match pos {
                                    Some(pos) if retryable(&code) => {
                                        ctx.count_tagged(name::REFUSED, format!("code={code}"));
                                        let o = &mut outbox[pos];
                                        o.req = None;
                                        o.retry_at = Some(Instant::now() + retry_delay(o.attempts));
                                    }
                                    Some(pos) => {
                                        outbox.swap_remove(pos);
                                        ctx.count_tagged(name::ERRORS, format!("kind=frame,code={code}"));
                                    }
                                    None => ctx.count_tagged(name::ERRORS, format!("kind=frame,code={code}")),
                                }
                            }
                            _ => {} // presence, typing, pong, resync
                        }
                    }
                    Event::Ping(p) => {
                        let _ = conn.pong(p).await;
                    }
                    Event::Closed { code, reason } => {
                        ctx.count(name::CLOSED, 1.0);
                        let tag = code.map_or(reason, |c| c.to_string());
                        ctx.count_tagged(name::CLOSED_UNEXPECTED, format!("code={tag}"));
                        // What was on the wire goes again in the next session.
                        for o in outbox.iter_mut() {
                            o.req = None;
                        }
                        if storm {
                            // One drop until its resume is settled, however often it is refused meanwhile.
                            if dropped_at.is_none() {
                                ctx.count(name::DROPPED, 1.0);
                                dropped_at = Some(Instant::now());
                            }
                            ever_dropped = true;
                            gw = ctx.other_gateway(gw);
                        }
                        continue 'sessions;
                    }
                },
                _ = sleep_until(ctx.coarse(deadline)) => {
                    let now = Instant::now();
                    if !authed {
                        ctx.count_tagged(name::ERRORS, "kind=auth_timeout".into());
                        for o in outbox.iter_mut() {
                            o.req = None;
                        }
                        conn.close(Duration::from_secs(2)).await;
                        ctx.count(name::CLOSED, 1.0);
                        continue 'sessions;
                    }
                    // Sends due.
                    for (next, every, kind) in [(&mut next_pair, pair_every, 0usize), (&mut next_group, group_every, 1)] {
                        let Some(at) = *next else { continue };
                        if at > now {
                            continue;
                        }
                        if at >= send_until {
                            *next = None;
                            continue;
                        }
                        // Ticks missed while disconnected are skipped, not bunched.
                        let mut n = at + every;
                        while n <= now {
                            n += every;
                        }
                        *next = Some(n);
                        let chat = if kind == 0 { user.pair_chat_id } else { user.group_chat_id };
                        let Some(chat) = chat else { continue };
                        msg_no += 1;
                        req += 1;
                        let sent_us = now_us();
                        let cmid = format!("lt-{k}-{msg_no}");
                        ctx.rec.borrow_mut().add_tagged(name::SENT, format!("chat={}", if kind == 0 { "pair" } else { "group" }), 1.0);
                        let _ = conn.send(frames::send(&format!("r{req}"), chat, &cmid, sent_us)).await;
                        outbox.push(Out { chat, cmid, sent_us, attempts: 1, req: Some(req), retry_at: None });
                    }
                    // Retries due.
                    for o in outbox.iter_mut() {
                        if o.retry_at.is_some_and(|r| r <= now) {
                            req += 1;
                            o.retry_at = None;
                            o.req = Some(req);
                            o.attempts += 1;
                            let _ = conn.send(frames::send(&format!("r{req}"), o.chat, &o.cmid, o.sent_us)).await;
                        }
                    }
                    if leave_at.is_some_and(|l| l <= now) && now + Duration::from_secs(2) < end {
                        // Drop the session early, as a phone changing networks would; the next resumes.
                        for o in outbox.iter_mut() {
                            o.req = None;
                        }
                        conn.close(Duration::from_secs(2)).await;
                        ctx.count(name::CLOSED, 1.0);
                        continue 'sessions;
                    }
                    if now >= end && !end_seen {
                        end_seen = true;
                        // A replay still owed is asked for as a final one, even without FINAL_SYNC.
                        if a.final_sync == 0 && owed.is_none() {
                            ended_by_us = true;
                        } else {
                            let spread = Duration::from_secs_f64(a.final_spread_s.max(0.0));
                            final_at = Some(now + spread.mul_f64(rand::random::<f64>()));
                            final_deadline = Some(now + spread + Duration::from_secs_f64(a.final_sync_timeout_s));
                        }
                    }
                    if resume_at.is_some_and(|r| r <= now) && !final_asked {
                        resume_at = None;
                        if let Some(since) = owed.as_deref() {
                            replaying = true;
                            let _ = conn.send(frames::resume(since)).await;
                        }
                    }
                    if final_at.is_some_and(|f| f <= now) {
                        final_at = None;
                        final_asked = true;
                        final_attempts += 1;
                        replaying = true;
                        resume_at = None;
                        let since = owed.clone().or_else(|| cursor.clone()).unwrap_or_else(|| "c0".into());
                        let _ = conn.send(frames::resume(&since)).await;
                    }
                    if quiet_until.is_some_and(|q| q <= now) {
                        ended_by_us = true;
                    }
                    if final_deadline.is_some_and(|d| d <= now) && !ended_by_us {
                        ctx.count_tagged(name::ERRORS, "kind=final_sync_timeout".into());
                        ended_by_us = true;
                    }
                    if ended_by_us {
                        conn.close(Duration::from_secs(2)).await;
                        ctx.count(name::CLOSED, 1.0);
                        break 'sessions;
                    }
                }
            }
        }
    }
    // The client's last word: sends still without an ack, and the seqs of its chats it never saw.
    if !outbox.is_empty() {
        ctx.count(name::UNACKED, outbox.len() as f64);
    }
    for b in &books {
        if b.gaps() > 0 {
            ctx.rec.borrow_mut().add_tagged(
                name::LOST,
                format!("chat={}", b.kind),
                b.gaps() as f64,
            );
        }
    }
}
