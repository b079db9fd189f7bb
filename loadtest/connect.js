// connect.js: how many authenticated sockets the stack holds. Ramp 0 -> 2/3 of VUS -> hold ->
// VUS -> hold (defaults: 10,000 then 15,000). Every VU opens one socket, authenticates with a
// first frame (AUTH_VIA), waits for auth_ok (Trend auth_ms = open -> auth_ok) and stays
// connected until the end; the server's WS pings are answered by k6 itself. A socket that closes before the end counts as
// ws_closed_unexpected and the VU reconnects.
//
// Env: USERS_FILE (chat-provision output), WS_URLS, VUS (peak, default 15000), RAMP1_S (60),
// HOLD1_S (60), RAMP2_S (30), HOLD2_S (60), AUTH_TIMEOUT_S (10), AUTH_P95_MS (50), AUTH_P99_MS (100),
// SESSION_AUTH_P99_MS (100: new WebSocket -> auth_ok, i.e. TCP + upgrade + auth).

import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';
import { setTimeout, clearTimeout } from 'k6/timers';
import { sleep } from 'k6';
import exec from 'k6/execution';
import { envNum, users, wsTarget, authVia, errorCode, logOnce, parseFrame } from './lib/common.js';
import { summarize, count, trend } from './lib/summary.js';

const AUTH_VIA = authVia('frame');
const VUS = envNum('VUS', 15000);
const PLATEAU = Math.max(1, Math.round((VUS * 2) / 3));
const RAMP1_S = envNum('RAMP1_S', 60);
const HOLD1_S = envNum('HOLD1_S', 60);
const RAMP2_S = envNum('RAMP2_S', 30);
const HOLD2_S = envNum('HOLD2_S', 60);
const TOTAL_MS = (RAMP1_S + HOLD1_S + RAMP2_S + HOLD2_S) * 1000;
const AUTH_TIMEOUT_MS = envNum('AUTH_TIMEOUT_S', 10) * 1000;

const authMs = new Trend('auth_ms', true); // open -> auth_ok
const sessionAuth = new Trend('session_auth_ms', true); // new WebSocket -> auth_ok (handshake + auth)
const authOk = new Counter('ws_auth_ok');
const wsErrors = new Counter('ws_errors');
const closedUnexpected = new Counter('ws_closed_unexpected');
const closed = new Counter('ws_closed');
const closeRaces = new Counter('ws_close_races');

export const options = {
  scenarios: {
    connect: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: `${RAMP1_S}s`, target: PLATEAU },
        { duration: `${HOLD1_S}s`, target: PLATEAU },
        { duration: `${RAMP2_S}s`, target: VUS },
        { duration: `${HOLD2_S}s`, target: VUS },
      ],
      gracefulRampDown: '0s',
      gracefulStop: '20s',
    },
  },
  thresholds: {
    ws_auth_ok: [`count>=${VUS}`],
    ws_errors: ['count==0'],
    ws_closed_unexpected: ['count==0'],
    auth_ms: [`p(95)<${envNum('AUTH_P95_MS', 50)}`, `p(99)<${envNum('AUTH_P99_MS', 100)}`],
    session_auth_ms: [`p(99)<${envNum('SESSION_AUTH_P99_MS', 100)}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  setupTimeout: '120s',
};

if (users.length < VUS) {
  throw new Error(`USERS_FILE has ${users.length} users, VUS=${VUS} needs as many`);
}

let iterations = 0;

export default function () {
  const idx = exec.vu.idInTest - 1; // unique across instances running execution segments
  const endAt = exec.scenario.startTime + TOTAL_MS;
  if (iterations++ > 0) sleep(1); // a reconnect after an unexpected close: no tight loop
  if (Date.now() > endAt - 2000) {
    sleep(Math.max(0, (endAt - Date.now()) / 1000));
    return;
  }
  const { url, params, authFrame } = wsTarget(idx, AUTH_VIA);
  const createdAt = Date.now();
  const ws = new WebSocket(url, null, params);
  let openedAt = 0;
  let authed = false;
  let closingByUs = false;
  let authTimer = null;

  const closeNow = () => {
    closingByUs = true;
    ws.close();
  };

  ws.onopen = (e) => {
    openedAt = e.timestamp || Date.now();
    if (authFrame) ws.send(authFrame);
    authTimer = setTimeout(() => {
      if (!authed) {
        wsErrors.add(1, { kind: 'auth_timeout' });
        logOnce('no auth_ok within the timeout');
        closeNow();
      }
    }, AUTH_TIMEOUT_MS);
  };

  ws.onmessage = (e) => {
    const f = parseFrame(e.data);
    if (!f) {
      wsErrors.add(1, { kind: 'bad_frame' });
      return;
    }
    if (f.type === 'auth_ok' && !authed) {
      authed = true;
      clearTimeout(authTimer);
      authOk.add(1);
      authMs.add((e.timestamp || Date.now()) - openedAt);
      sessionAuth.add((e.timestamp || Date.now()) - createdAt);
      setTimeout(closeNow, Math.max(0, endAt - Date.now()));
    } else if (f.type === 'error') {
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
    const code = errorCode(e);
    wsErrors.add(1, { kind: 'socket', code });
    logOnce(`socket error: ${e.error}`);
  };

  ws.onclose = () => {
    clearTimeout(authTimer);
    closed.add(1);
    if (!closingByUs) {
      closedUnexpected.add(1);
      logOnce(`closed by the server after ${authed ? 'auth' : 'no auth'}`);
    }
  };
}

export function handleSummary(data) {
  const auth = trend(data, 'auth_ms');
  return summarize(data, 'connect.js', [], {
    vus: VUS,
    auth_ok: count(data, 'ws_auth_ok'),
    ws_errors: count(data, 'ws_errors'),
    closed_unexpected: count(data, 'ws_closed_unexpected'),
    auth_ms: auth,
    session_auth_ms: trend(data, 'session_auth_ms'),
    ws_connecting_ms: trend(data, 'ws_connecting'),
  });
}
