// churn.js: the seed's run. Short sessions (SESSION_S, default 12 s) opened at a rising rate
// (ramping-arrival-rate) up to RATE new sessions/s (default VUS * 0.06: 900/s at 15,000 VUs); each
// session connects with ?token= (AUTH_VIA; lib/common.js says why), authenticates (Trend
// session_auth_ms = handshake + auth, from creating the socket to auth_ok), sends MSGS messages to
// its pair chat spread over the session, and closes. Every own message must come back as
// new_message before the close (msgs_lost otherwise; the close waits up to ECHO_GRACE_S for echoes
// of acked messages, since an ack can overtake its echo); messages from the partner, when it is
// online, are counted too. chat_delivery_ms is measured on both (tag path: echo | peer). A send
// refused with `unavailable` or `rate_limited` goes again with the same client_msg_id after a
// backoff, as an app's would (sends_refused, threshold 0); one still unacked at the close counts in
// msgs_unacked.
//
// Env: USERS_FILE, WS_URLS, VUS (max concurrent VUs, default 15000), RATE, RAMP_S (30),
// HOLD_S (75), DOWN_S (15), SESSION_S (12), MSGS (3), ECHO_GRACE_S (2), SESSION_AUTH_P99_MS (50),
// DELIVERY_P99_MS (250).

import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';
import exec from 'k6/execution';
import {
  envNum, users, wsTarget, authVia, errorCode, logOnce, parseFrame, RETRYABLE_SEND, retryDelayMs,
} from './lib/common.js';
import { summarize, count, trend } from './lib/summary.js';

const AUTH_VIA = authVia('query');
const VUS = envNum('VUS', 15000);
const RATE = envNum('RATE', Math.max(1, Math.round(VUS * 0.06)));
const RAMP_S = envNum('RAMP_S', 30);
const HOLD_S = envNum('HOLD_S', 75);
const DOWN_S = envNum('DOWN_S', 15);
const SESSION_MS = envNum('SESSION_S', 12) * 1000;
const MSGS = envNum('MSGS', 3);
const AUTH_TIMEOUT_MS = envNum('AUTH_TIMEOUT_S', 10) * 1000;
const ECHO_GRACE_MS = envNum('ECHO_GRACE_S', 2) * 1000;

const sessionAuth = new Trend('session_auth_ms', true);
const delivery = new Trend('chat_delivery_ms', true);
const sendAck = new Trend('send_ack_ms', true);
const authOk = new Counter('ws_auth_ok');
const sessionsFailed = new Counter('ws_sessions_failed');
const sessionsDone = new Counter('ws_sessions_completed');
const wsErrors = new Counter('ws_errors');
const closedUnexpected = new Counter('ws_closed_unexpected');
const closed = new Counter('ws_closed');
const closeRaces = new Counter('ws_close_races');
const sent = new Counter('msgs_sent');
const acked = new Counter('msgs_acked');
const received = new Counter('msgs_received');
const lost = new Counter('msgs_lost');
const unacked = new Counter('msgs_unacked');
const refused = new Counter('sends_refused'); // error frames unavailable / rate_limited, re-sent

export const options = {
  scenarios: {
    churn: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: VUS,
      maxVUs: VUS,
      stages: [
        { duration: `${RAMP_S}s`, target: RATE },
        { duration: `${HOLD_S}s`, target: RATE },
        { duration: `${DOWN_S}s`, target: 0 },
      ],
      gracefulStop: `${Math.ceil(SESSION_MS / 1000) + 15}s`,
    },
  },
  thresholds: {
    session_auth_ms: [`p(99)<${envNum('SESSION_AUTH_P99_MS', 50)}`],
    chat_delivery_ms: [`p(99)<${envNum('DELIVERY_P99_MS', 250)}`],
    ws_sessions_failed: ['count==0'],
    ws_errors: ['count==0'],
    ws_closed_unexpected: ['count==0'],
    msgs_lost: ['count==0'],
    msgs_unacked: ['count==0'],
    sends_refused: ['count==0'],
    dropped_iterations: ['count==0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const idx = exec.scenario.iterationInTest % users.length;
  const { user, url, params, authFrame } = wsTarget(idx, AUTH_VIA);
  const chatId = user.pair_chat_id;
  const startedAt = Date.now();
  const tag = `${__VU}-${exec.scenario.iterationInTest}`;
  const pending = {}; // request id -> send {at, cmid, attempts}
  const backingOff = new Set(); // refused sends waiting for their next attempt
  const echoes = {}; // client_msg_id -> sent at (echo not yet seen)
  const ackedIds = {}; // client_msg_id -> true once acked
  const timers = [];
  let authed = false;
  let opened = false;
  let closingByUs = false;
  let ending = false; // no more sends; waiting for the last echoes
  let n = 0;

  const ws = new WebSocket(url, null, params);

  const transmit = (entry) => {
    if (ws.readyState !== 1 || ending) {
      backingOff.add(entry);
      return;
    }
    n += 1;
    const id = `r${n}`;
    entry.attempts += 1;
    pending[id] = entry;
    ws.send(JSON.stringify({ type: 'send', id, chat_id: chatId, client_msg_id: entry.cmid, text: String(entry.at) }));
  };

  const send = () => {
    if (ws.readyState !== 1 || ending || !chatId) return;
    const at = Date.now();
    const cmid = `ch-${tag}-${n + 1}`;
    echoes[cmid] = at;
    transmit({ at, cmid, attempts: 0 });
    sent.add(1);
  };

  const retryLater = (entry) => {
    backingOff.add(entry);
    timers.push(setTimeout(() => {
      if (backingOff.delete(entry)) transmit(entry);
    }, retryDelayMs(entry.attempts)));
  };

  // Acked messages whose own copy has not come back yet.
  const missingEchoes = () => Object.keys(echoes).filter((cmid) => ackedIds[cmid]).length;

  const close = () => {
    if (closingByUs) return;
    closingByUs = true;
    for (const t of timers) clearTimeout(t);
    const waiting = Object.keys(pending).length + backingOff.size;
    if (waiting > 0) unacked.add(waiting);
    const missing = missingEchoes();
    if (missing > 0) {
      lost.add(missing);
      logOnce(`${missing} own messages not delivered back before the close`);
    }
    sessionsDone.add(1);
    ws.close();
  };

  // The session's time is up: stop sending, give echoes that an ack overtook a moment, close.
  const finish = () => {
    if (ending) return;
    ending = true;
    if (missingEchoes() === 0) {
      close();
      return;
    }
    timers.push(setTimeout(close, ECHO_GRACE_MS));
  };

  timers.push(setTimeout(() => {
    if (!authed) {
      sessionsFailed.add(1);
      wsErrors.add(1, { kind: 'auth_timeout' });
      // The user, gateway and socket state: the gateway logs "auth_ok queued" per user at debug.
      logOnce(`no auth_ok within the timeout (user ${user.id}, ${params.tags.name}, readyState ${ws.readyState}, opened ${opened})`);
      finish();
    }
  }, AUTH_TIMEOUT_MS));

  ws.onopen = () => {
    opened = true;
    if (authFrame) ws.send(authFrame);
  };

  ws.onmessage = (e) => {
    const at = e.timestamp || Date.now();
    const f = parseFrame(e.data);
    if (!f) {
      wsErrors.add(1, { kind: 'bad_frame' });
      return;
    }
    if (f.type === 'auth_ok' && !authed) {
      authed = true;
      authOk.add(1);
      sessionAuth.add(at - startedAt);
      for (let i = 1; i <= MSGS; i++) {
        timers.push(setTimeout(send, (SESSION_MS * i) / (MSGS + 1)));
      }
      timers.push(setTimeout(finish, Math.max(0, startedAt + SESSION_MS - Date.now())));
    } else if (f.type === 'ack') {
      const p = pending[f.id];
      if (!p) return;
      delete pending[f.id];
      acked.add(1);
      ackedIds[p.cmid] = true;
      sendAck.add(at - p.at);
    } else if (f.type === 'new_message') {
      const m = f.message;
      if (m.chat_id !== chatId) return;
      const sentAt = Number(m.text);
      if (m.sender_id === user.id) {
        if (echoes[m.client_msg_id] === undefined) return; // another session of this user
        delete echoes[m.client_msg_id];
        if (Number.isFinite(sentAt)) delivery.add(at - sentAt, { path: 'echo' });
        if (ending && missingEchoes() === 0) close();
      } else {
        received.add(1);
        if (Number.isFinite(sentAt)) delivery.add(at - sentAt, { path: 'peer' });
      }
    } else if (f.type === 'error') {
      const p = f.id ? pending[f.id] : undefined;
      if (p) delete pending[f.id];
      if (p && RETRYABLE_SEND[f.code]) {
        refused.add(1, { code: String(f.code) });
        retryLater(p);
        return;
      }
      if (p) delete echoes[p.cmid];
      wsErrors.add(1, { kind: 'frame', code: String(f.code) });
      logOnce(`error frame: ${e.data}`);
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
    if (!authed) sessionsFailed.add(1);
    logOnce(`socket error: ${e.error}`);
  };

  ws.onclose = () => {
    for (const t of timers) clearTimeout(t);
    closed.add(1);
    if (!closingByUs) {
      closedUnexpected.add(1);
      logOnce(`closed by the server (authed: ${authed})`);
    }
  };
}

export function handleSummary(data) {
  const sessions = count(data, 'ws_auth_ok');
  const durS = data.state.testRunDurationMs / 1000;
  return summarize(data, 'churn.js', [], {
    vus: VUS,
    target_rate_per_s: RATE,
    sessions_authenticated: sessions,
    sessions_failed: count(data, 'ws_sessions_failed'),
    sessions_completed: count(data, 'ws_sessions_completed'),
    dropped_iterations: count(data, 'dropped_iterations'),
    mean_sessions_per_s: sessions / durS,
    session_auth_ms: trend(data, 'session_auth_ms'),
    chat_delivery_ms: trend(data, 'chat_delivery_ms'),
    send_ack_ms: trend(data, 'send_ack_ms'),
    msgs_sent: count(data, 'msgs_sent'),
    msgs_acked: count(data, 'msgs_acked'),
    msgs_lost: count(data, 'msgs_lost'),
    sends_refused: count(data, 'sends_refused'),
    ws_errors: count(data, 'ws_errors'),
    closed_unexpected: count(data, 'ws_closed_unexpected'),
  });
}
