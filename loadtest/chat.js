// chat.js: delivery latency and loss. VUs come in pairs sharing a private chat (users 2k and 2k+1,
// always on different gateways) and, when provisioned with --group-size K, in groups of K
// consecutive users. After everyone is connected, each VU sends
//   {"type":"send","id":..,"chat_id":..,"client_msg_id":..,"text":"<send time, ms since epoch>"}
// to its pair chat every SEND_EVERY_S seconds (and to its group every GROUP_SEND_EVERY_S seconds);
// receivers record chat_delivery_ms = receive time - send time (same machine clock).
//
// Loss is checked two ways: (1) per chat, every VU sees every seq of the chat (its own messages
// come back as new_message too), so gaps below the highest seq it knows of are counted in
// msgs_lost (threshold count==0); (2) from totals in handleSummary: the messages received from
// others must equal the sum over acked messages of (members - 1).
//
// At the end each VU asks its gateway for a replay from its last cursor (a `resume` frame) and
// closes once the replay is done and no new_message has come for FINAL_QUIET_MS: a message that
// was committed but is still on its way when the test ends (an overloaded machine) then counts
// as late, not as lost: msgs_late counts what arrives after the end, live or by the replay, and
// such deliveries are tagged via=final. The VUs spread their replays
// over FINAL_SPREAD_S, and one refused as `unavailable` is asked again after a backoff, as an app
// would. FINAL_SYNC=0 closes at once.
//
// A VU behaves like an app: a send refused with `unavailable` or `rate_limited` is sent again with
// the same client_msg_id after a backoff (counted in sends_refused, threshold count==0), and a VU
// whose session ends early (auth timeout, server close) reconnects with ?since=<last cursor>, so
// the gateway replays what it missed and sends it has not seen acked go out again. Both checks
// therefore span a VU's sessions. Deliveries that arrive by replay are tagged via=replay. The
// replay stays owed from the cursor the VU held when its session ended until a `synced` settles
// it: a resume refused as `unavailable` (no id) is asked again from that cursor after a backoff
// (resumes_refused), however far live events moved on meanwhile.
//
// RECEIPTS=1 makes each VU acknowledge what it receives as an app would: after a message from
// someone else, one {"type":"delivered","chat_id":..,"up_to_seq":<highest seq held>} per chat per
// burst (bursts end RECEIPTS_COALESCE_MS after their first message, default 50), counted in
// receipts_sent, answered acks timed in receipt_ack_ms, and message_delivered events from the
// other members counted in receipts_received. Off by default, so runs with and without compare.
//
// Env: USERS_FILE, WS_URLS, VUS (default 2000), RAMP_S (30), HOLD_S (120), SETTLE_S (5: quiet time
// after the ramp before sending), DRAIN_S (5: quiet time before closing), SEND_EVERY_S (10),
// GROUP_SEND_EVERY_S (60; 0 = no group messages), DELIVERY_P95_MS (100), DELIVERY_P99_MS (250),
// RECONNECT_EVERY_S (0 = never: otherwise each session ends after about that long, and resumes),
// FINAL_SYNC (1), FINAL_SPREAD_S (5), FINAL_QUIET_MS (1000), FINAL_SYNC_TIMEOUT_S (12).

import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';
import { sleep } from 'k6';
import exec from 'k6/execution';
import {
  envNum, users, wsTarget, authVia, withQuery, errorCode, logOnce, parseFrame, RETRYABLE_SEND, retryDelayMs,
} from './lib/common.js';
import { summarize, count, trend } from './lib/summary.js';

const AUTH_VIA = authVia('frame');
const VUS = envNum('VUS', 2000);
const RAMP_S = envNum('RAMP_S', 30);
const HOLD_S = envNum('HOLD_S', 120);
const SETTLE_S = envNum('SETTLE_S', 5);
const DRAIN_S = envNum('DRAIN_S', 5);
const SEND_EVERY_MS = envNum('SEND_EVERY_S', 10) * 1000;
const GROUP_EVERY_MS = envNum('GROUP_SEND_EVERY_S', 60) * 1000;
const AUTH_TIMEOUT_MS = envNum('AUTH_TIMEOUT_S', 10) * 1000;
const RECONNECT_EVERY_MS = envNum('RECONNECT_EVERY_S', 0) * 1000;
const FINAL_SYNC = envNum('FINAL_SYNC', 1) !== 0;
const FINAL_SPREAD_MS = envNum('FINAL_SPREAD_S', 5) * 1000;
const FINAL_QUIET_MS = envNum('FINAL_QUIET_MS', 1000);
const FINAL_SYNC_TIMEOUT_MS = envNum('FINAL_SYNC_TIMEOUT_S', 12) * 1000;
const RECEIPTS = envNum('RECEIPTS', 0) !== 0;
const RECEIPTS_COALESCE_MS = envNum('RECEIPTS_COALESCE_MS', 50);
const TOTAL_MS = (RAMP_S + HOLD_S) * 1000;
const SEND_FROM_MS = (RAMP_S + SETTLE_S) * 1000;
const SEND_UNTIL_MS = TOTAL_MS - DRAIN_S * 1000;

const delivery = new Trend('chat_delivery_ms', true);
const sendAck = new Trend('send_ack_ms', true);
const authMs = new Trend('auth_ms', true); // open -> auth_ok
const sessionAuth = new Trend('session_auth_ms', true); // new WebSocket -> auth_ok (handshake + auth)
const authOk = new Counter('ws_auth_ok');
const wsErrors = new Counter('ws_errors');
const closedUnexpected = new Counter('ws_closed_unexpected');
const closed = new Counter('ws_closed');
const closeRaces = new Counter('ws_close_races');
const sent = new Counter('msgs_sent');
const acked = new Counter('msgs_acked');
const expected = new Counter('msgs_expected'); // sum over acked messages of (members - 1)
const received = new Counter('msgs_received'); // new_message from someone else
const late = new Counter('msgs_late'); // of those, first seen after the end of the test
const refusedReplays = new Counter('final_replays_refused'); // asked again after a backoff
const refusedResumes = new Counter('resumes_refused'); // a resume's replay refused, asked again
const lost = new Counter('msgs_lost'); // seq gaps seen by a socket at the end
const unacked = new Counter('msgs_unacked'); // sends without ack or error at the end
const duplicates = new Counter('msgs_duplicate');
const refused = new Counter('sends_refused'); // error frames unavailable / rate_limited, re-sent
const resumed = new Counter('ws_resumed'); // sessions that began with ?since=<cursor>
const receiptsSent = new Counter('receipts_sent'); // delivered frames (RECEIPTS=1)
const receiptsReceived = new Counter('receipts_received'); // message_delivered from others
const receiptAck = new Trend('receipt_ack_ms', true); // delivered frame -> its ack

export const options = {
  scenarios: {
    chat: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: `${RAMP_S}s`, target: VUS },
        { duration: `${HOLD_S}s`, target: VUS },
      ],
      gracefulRampDown: '0s',
      gracefulStop: '20s',
    },
  },
  thresholds: {
    chat_delivery_ms: [
      `p(95)<${envNum('DELIVERY_P95_MS', 100)}`,
      `p(99)<${envNum('DELIVERY_P99_MS', 250)}`,
    ],
    ws_errors: ['count==0'],
    ws_closed_unexpected: ['count==0'],
    msgs_lost: ['count==0'],
    msgs_unacked: ['count==0'],
    msgs_received: ['count>0'],
    sends_refused: ['count==0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

if (users.length < VUS) {
  throw new Error(`USERS_FILE has ${users.length} users, VUS=${VUS} needs as many`);
}
if (SEND_UNTIL_MS <= SEND_FROM_MS) {
  throw new Error('HOLD_S is too short for SETTLE_S + DRAIN_S');
}

// Per VU (each VU has its own module instance), kept across its sessions.
let iterations = 0;
let chats = null; // chat_id -> {members, kind, seen: {seq: true}, n, max}
let lastCursor = null; // cursor of the last new_message / message_read / synced processed
let owedCursor = null; // where the replay owed since a session ended starts, until its `synced`
let carried = []; // sends of an ended session with no ack yet: re-sent by the next one
let booksClosed = false; // closeBooks ran

export default function () {
  // The VU's number across the whole test, also when k6 instances each run an execution segment
  // (__VU counts from 1 in every instance): user idx, and its pair and group.
  const idx = exec.vu.idInTest - 1;
  const iteration = iterations++;
  const start = exec.scenario.startTime;
  const endAt = start + TOTAL_MS;
  if (iteration > 0) sleep(1); // reconnecting after an unexpected close
  if (Date.now() > endAt - 2000) {
    closeBooks(carried);
    carried = [];
    sleep(Math.max(0, (endAt - Date.now()) / 1000));
    return;
  }
  const target = wsTarget(idx, AUTH_VIA);
  const { user, params } = target;
  let url = target.url;
  let replaying = false; // between a resuming upgrade and its `synced`
  if (iteration > 0) {
    // A session that saw no event yet has no cursor: c0 replays everything, and this run's
    // chats are new, so that is only what the VU missed.
    if (owedCursor === null) owedCursor = lastCursor === null ? 'c0' : lastCursor;
    url = withQuery(url, 'since', owedCursor);
    replaying = true;
    resumed.add(1);
  }
  if (chats === null) {
    chats = {};
    if (user.pair_chat_id) chats[user.pair_chat_id] = { members: 2, kind: 'pair' };
    if (user.group_chat_id) chats[user.group_chat_id] = { members: user.group_size, kind: 'group' };
    for (const c of Object.values(chats)) {
      c.seen = {};
      c.n = 0;
      c.max = 0;
    }
  }
  const pending = {}; // request id -> send {chat, clientMsgId, text, attempts, lastAt}
  const backingOff = new Set(); // refused sends waiting for their next attempt
  let seqNo = 0;
  let authed = false;
  let closingByUs = false;
  let finalSync = false; // the end-of-test replay was asked for
  let finalAttempts = 0;
  let resumeAttempts = 0;
  let finalSynced = false; // ... and its `synced` came
  let quietTimer = null;
  let openedAt = 0;
  const timers = [];
  const receiptsDue = {}; // chat id -> highest seq to acknowledge in the next receipt burst
  const receiptsOut = {}; // delivered frame id -> when it was sent
  let receiptTimer = null;

  const createdAt = Date.now();
  const ws = new WebSocket(url, null, params);

  const noteSeq = (chatId, seq) => {
    const c = chats[chatId];
    if (seq > c.max) c.max = seq;
    if (c.seen[seq]) return false;
    c.seen[seq] = true;
    c.n += 1;
    return true;
  };

  const transmit = (entry) => {
    if (ws.readyState !== 1 || closingByUs) {
      backingOff.add(entry); // the session is ending: the next one sends it
      return;
    }
    seqNo += 1;
    const id = `r${seqNo}`;
    entry.attempts += 1;
    entry.lastAt = Date.now();
    pending[id] = entry;
    ws.send(JSON.stringify({
      type: 'send',
      id,
      chat_id: entry.chat,
      client_msg_id: entry.clientMsgId,
      text: entry.text,
    }));
  };

  // One delivered frame per chat per burst, with the highest seq held.
  const noteReceipt = (chatId, seq) => {
    if (!RECEIPTS) return;
    if (!(receiptsDue[chatId] >= seq)) receiptsDue[chatId] = seq;
    if (receiptTimer !== null) return;
    receiptTimer = setTimeout(() => {
      receiptTimer = null;
      if (ws.readyState !== 1 || closingByUs) return;
      for (const chatId of Object.keys(receiptsDue)) {
        seqNo += 1;
        const id = `d${seqNo}`;
        receiptsOut[id] = Date.now();
        ws.send(JSON.stringify({ type: 'delivered', id, chat_id: Number(chatId), up_to_seq: receiptsDue[chatId] }));
        delete receiptsDue[chatId];
        receiptsSent.add(1);
      }
    }, RECEIPTS_COALESCE_MS);
    timers.push(receiptTimer);
  };

  const send = (chatId) => {
    if (ws.readyState !== 1 || closingByUs) return;
    const now = Date.now();
    seqNo += 1;
    transmit({
      chat: chatId,
      clientMsgId: `lt-${exec.vu.idInTest}-${iteration}-${seqNo}`,
      text: String(now),
      attempts: 0,
    });
    sent.add(1, { chat: chats[chatId].kind });
  };

  const retryLater = (entry) => {
    backingOff.add(entry);
    timers.push(setTimeout(() => {
      if (!backingOff.delete(entry)) return;
      transmit(entry);
    }, retryDelayMs(entry.attempts)));
  };

  // At a session's end: what is not acked yet goes to the next session. When the test is over,
  // it counts as unacked instead, and the seqs this VU never saw as lost.
  const handOver = () => {
    const open = Object.values(pending).concat(Array.from(backingOff));
    for (const id of Object.keys(pending)) delete pending[id];
    backingOff.clear();
    if (Date.now() >= endAt - 2000) {
      closeBooks(open);
    } else {
      carried = carried.concat(open);
    }
  };

  // Sends every `every` ms to `chatId` inside the sending window, from a random phase.
  const schedule = (chatId, every) => {
    if (!chatId || every <= 0) return;
    let next = Math.max(start + SEND_FROM_MS, Date.now()) + Math.random() * every;
    const tick = () => {
      if (Date.now() >= start + SEND_UNTIL_MS || closingByUs) return;
      send(chatId);
      next += every;
      timers.push(setTimeout(tick, Math.max(0, next - Date.now())));
    };
    if (next < start + SEND_UNTIL_MS) timers.push(setTimeout(tick, Math.max(0, next - Date.now())));
  };

  // The end of the test: replay what this VU may not have seen yet, then close (see the header).
  const syncThenFinish = () => {
    if (closingByUs || finalSync) return;
    if (!FINAL_SYNC || ws.readyState !== 1) {
      finish();
      return;
    }
    finalSync = true;
    timers.push(setTimeout(askFinalReplay, Math.random() * FINAL_SPREAD_MS));
    timers.push(setTimeout(() => {
      if (closingByUs) return;
      wsErrors.add(1, { kind: 'final_sync_timeout' });
      logOnce('the final replay did not finish in time');
      finish();
    }, FINAL_SPREAD_MS + FINAL_SYNC_TIMEOUT_MS));
  };

  const askFinalReplay = () => {
    if (closingByUs || ws.readyState !== 1) return;
    finalAttempts += 1;
    replaying = true;
    const since = owedCursor !== null ? owedCursor : lastCursor === null ? 'c0' : lastCursor;
    ws.send(JSON.stringify({ type: 'resume', since }));
  };

  const askResumeAgain = () => {
    if (closingByUs || finalSync || owedCursor === null || ws.readyState !== 1) return;
    replaying = true;
    ws.send(JSON.stringify({ type: 'resume', since: owedCursor }));
  };

  // After the final replay: close once no new_message came for FINAL_QUIET_MS.
  const finishWhenQuiet = () => {
    if (quietTimer !== null) clearTimeout(quietTimer);
    quietTimer = setTimeout(finish, FINAL_QUIET_MS);
    timers.push(quietTimer);
  };

  const finish = () => {
    if (closingByUs) return;
    closingByUs = true;
    for (const t of timers) clearTimeout(t);
    handOver();
    ws.close();
  };

  ws.onopen = (e) => {
    openedAt = e.timestamp || Date.now();
    if (target.authFrame) ws.send(target.authFrame);
    timers.push(setTimeout(() => {
      if (!authed) {
        wsErrors.add(1, { kind: 'auth_timeout' });
        logOnce('no auth_ok within the timeout');
        finish();
      }
    }, AUTH_TIMEOUT_MS));
  };

  ws.onmessage = (e) => {
    const at = e.timestamp || Date.now();
    const f = parseFrame(e.data);
    if (!f) {
      wsErrors.add(1, { kind: 'bad_frame' });
      return;
    }
    switch (f.type) {
      case 'new_message': {
        const m = f.message;
        if (f.cursor) lastCursor = f.cursor;
        if (!chats[m.chat_id]) return; // not a chat of this run
        const fresh = noteSeq(m.chat_id, m.seq);
        if (finalSynced) finishWhenQuiet();
        if (!fresh) {
          // A replay may repeat what the last session saw (docs/protocol.md, Sync and resume).
          if (!replaying) duplicates.add(1);
          return;
        }
        if (m.sender_id !== user.id) {
          noteReceipt(m.chat_id, chats[m.chat_id].max);
          const kind = chats[m.chat_id].kind;
          received.add(1, { chat: kind });
          if (finalSync) late.add(1, { chat: kind });
          const sentAt = Number(m.text);
          const via = finalSync ? 'final' : replaying ? 'replay' : 'live';
          if (Number.isFinite(sentAt)) delivery.add(at - sentAt, { chat: kind, via });
        }
        break;
      }
      case 'message_read':
        if (f.cursor) lastCursor = f.cursor;
        break;
      case 'message_delivered':
        if (f.cursor) lastCursor = f.cursor;
        if (f.user_id !== user.id) receiptsReceived.add(1);
        break;
      case 'synced':
        if (f.cursor) lastCursor = f.cursor;
        replaying = false;
        owedCursor = null;
        if (finalSync) {
          finalSynced = true;
          finishWhenQuiet();
        }
        break;
      case 'ack': {
        if (f.id in receiptsOut) {
          receiptAck.add(at - receiptsOut[f.id]);
          delete receiptsOut[f.id];
          break;
        }
        const p = pending[f.id];
        if (!p) return;
        delete pending[f.id];
        sendAck.add(at - p.lastAt);
        acked.add(1);
        const c = chats[p.chat];
        expected.add(c.members - 1, { chat: c.kind });
        if (f.message) noteSeqMax(c, f.message.seq);
        break;
      }
      case 'auth_ok':
        // An auth_ok after the timeout gave up on the session starts nothing: its sends would
        // go into a closing socket.
        if (!authed && !closingByUs) {
          authed = true;
          authOk.add(1);
          authMs.add(at - openedAt);
          sessionAuth.add(at - createdAt);
          const resend = carried;
          carried = [];
          for (const entry of resend) transmit(entry);
          schedule(user.pair_chat_id, SEND_EVERY_MS);
          schedule(user.group_chat_id, GROUP_EVERY_MS);
          timers.push(setTimeout(syncThenFinish, Math.max(0, endAt - Date.now())));
          if (RECONNECT_EVERY_MS > 0) {
            // Drop the session early, as a phone changing networks would; the next resumes.
            timers.push(setTimeout(finish, RECONNECT_EVERY_MS * (0.5 + Math.random())));
          }
        }
        break;
      case 'error': {
        if (!f.id && finalSync && replaying && RETRYABLE_SEND[f.code]) {
          // The final replay was refused (the api is busy with everyone's): ask again.
          refusedReplays.add(1, { code: String(f.code) });
          replaying = false;
          timers.push(setTimeout(askFinalReplay, retryDelayMs(finalAttempts)));
          break;
        }
        if (!f.id && authed && replaying && !finalSync && RETRYABLE_SEND[f.code]) {
          // The resume's replay was refused: live events flow now, the gap before them is still owed.
          refusedResumes.add(1, { code: String(f.code) });
          replaying = false;
          resumeAttempts += 1;
          timers.push(setTimeout(askResumeAgain, retryDelayMs(resumeAttempts)));
          break;
        }
        const p = f.id ? pending[f.id] : undefined;
        if (p) delete pending[f.id];
        if (p && RETRYABLE_SEND[f.code]) {
          refused.add(1, { code: String(f.code) });
          retryLater(p);
          break;
        }
        wsErrors.add(1, { kind: 'frame', code: String(f.code) });
        logOnce(`error frame: ${e.data}`);
        break;
      }
      default:
        break; // presence, typing, message_read, resync
    }
  };

  ws.onerror = (e) => {
    if (closingByUs) {
      // A race of our own close with a server ping or frame ("websocket: close sent"): not a
      // server fault, but counted for transparency.
      closeRaces.add(1);
      return;
    }
    wsErrors.add(1, { kind: 'socket', code: errorCode(e) });
    logOnce(`socket error: ${e.error}`);
  };

  ws.onclose = () => {
    for (const t of timers) clearTimeout(t);
    closed.add(1);
    if (!closingByUs) {
      handOver();
      closedUnexpected.add(1);
      logOnce(`closed by the server (authed: ${authed})`);
    }
  };
}

// The VU's last word: its sends still without an ack, and the seqs of its chats it never saw.
function closeBooks(open) {
  if (booksClosed) return;
  booksClosed = true;
  if (open.length > 0) unacked.add(open.length);
  if (chats === null) return;
  for (const c of Object.values(chats)) {
    const gaps = c.max - c.n;
    if (gaps > 0) {
      lost.add(gaps, { chat: c.kind });
      const missing = [];
      for (let seq = 1; seq <= c.max && missing.length < 5; seq++) if (!c.seen[seq]) missing.push(seq);
      logOnce(`${gaps} seqs missing in ${c.kind} chat ${chatIdOf(c)} (max ${c.max}, seen ${c.n}; ` +
        `first missing ${missing.join(',')}; user ${users[exec.vu.idInTest - 1].id})`);
    }
  }
}

function chatIdOf(c) {
  return Object.keys(chats).find((id) => chats[id] === c);
}

// The ack's seq raises the highest seq known for the chat without marking it seen: the socket
// must still receive that message as new_message.
function noteSeqMax(c, seq) {
  if (seq > c.max) c.max = seq;
}

export function handleSummary(data) {
  const exp = count(data, 'msgs_expected');
  const rec = count(data, 'msgs_received');
  const checks = [
    {
      name: 'loss (totals)',
      ok: exp > 0 && exp === rec,
      detail: `received ${rec} of ${exp} expected deliveries (${exp - rec} lost)`,
    },
  ];
  return summarize(data, 'chat.js', checks, {
    vus: VUS,
    send_every_s: SEND_EVERY_MS / 1000,
    group_send_every_s: GROUP_EVERY_MS / 1000,
    auth_ok: count(data, 'ws_auth_ok'),
    msgs_sent: count(data, 'msgs_sent'),
    msgs_acked: count(data, 'msgs_acked'),
    msgs_expected: exp,
    msgs_received: rec,
    msgs_late: count(data, 'msgs_late'),
    final_replays_refused: count(data, 'final_replays_refused'),
    resumes_refused: count(data, 'resumes_refused'),
    msgs_lost_totals: exp - rec,
    msgs_lost_seq_gaps: count(data, 'msgs_lost'),
    msgs_unacked: count(data, 'msgs_unacked'),
    msgs_duplicate: count(data, 'msgs_duplicate'),
    sends_refused: count(data, 'sends_refused'),
    ws_resumed: count(data, 'ws_resumed'),
    receipts: RECEIPTS ? 1 : 0,
    receipts_sent: count(data, 'receipts_sent'),
    receipts_received: count(data, 'receipts_received'),
    receipt_ack_ms: trend(data, 'receipt_ack_ms'),
    ws_errors: count(data, 'ws_errors'),
    closed_unexpected: count(data, 'ws_closed_unexpected'),
    chat_delivery_ms: trend(data, 'chat_delivery_ms'),
    send_ack_ms: trend(data, 'send_ack_ms'),
    auth_ms: trend(data, 'auth_ms'),
    session_auth_ms: trend(data, 'session_auth_ms'),
  });
}
