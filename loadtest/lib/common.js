// Shared by the k6 scripts: configuration from the environment, the provisioned users, gateway
// assignment and a few helpers. Users come from chat-provision's JSON
// ([{id, username, token, pair_chat_id?, peer_id?, group_chat_id?, group_size?}]).

import { SharedArray } from 'k6/data';

/** A number from the environment, or the default. */
export function envNum(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export const API_URL = __ENV.API_URL || 'http://127.0.0.1:18280';
export const WS_URLS = (__ENV.WS_URLS || 'ws://127.0.0.1:18281/ws,ws://127.0.0.1:18283/ws')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);

if (!__ENV.USERS_FILE) {
  throw new Error('USERS_FILE is not set: run chat-provision first (loadtest/run.sh does)');
}

// open() only works in the init context; SharedArray keeps one copy for all VUs.
export const users = new SharedArray('users', () => JSON.parse(open(__ENV.USERS_FILE)));

/**
 * The gateway of user number `idx`: round-robin, so the two users of a pair (2k, 2k+1) and
 * consecutive members of a group are on different gateways whenever there are at least two.
 */
export function gatewayIndex(idx) {
  return idx % WS_URLS.length;
}

/**
 * How a script's sockets authenticate, `frame` or `query` (AUTH_VIA overrides the script's
 * default).
 *
 * - `frame` sends {"type":"auth","token"} once open. With `query` (?token= on the upgrade URL) the
 *   gateway sends auth_ok right behind the 101 response, and k6 1.1 drops a frame that its read
 *   goroutine queues before the `open` event (websockets.go: `go w.loop()` runs before
 *   `connectionConnected` is queued, and `queueMessage` discards frames while the state is not
 *   OPEN): 1-14 VUs in 15,000 never saw an auth_ok the gateways' logs show sent within a
 *   millisecond (docs/performance.md). With `frame` the server speaks only after the client.
 * - But with `frame`, the protocol's 5 s deadline for the first frame runs on the server while
 *   an overloaded k6 gets round to `open`: churn.js at 900 sessions/s here had 1,576 sessions
 *   closed with 4001 that way. So churn.js defaults to `query`, chat.js and connect.js to `frame`.
 */
export function authVia(scriptDefault) {
  const via = __ENV.AUTH_VIA || scriptDefault;
  if (via !== 'frame' && via !== 'query') {
    throw new Error(`AUTH_VIA=${via}: expected frame or query`);
  }
  return via;
}

/**
 * URL, k6 params and the auth frame to send on `open` (null with `query`) for user `idx`. The
 * `name` tag keeps the token out of the metrics' url tag.
 */
export function wsTarget(idx, via) {
  const user = users[idx % users.length];
  const gw = gatewayIndex(idx);
  const params = { tags: { name: `gw${gw + 1}` } };
  if (via === 'query') {
    return { user, url: `${WS_URLS[gw]}?token=${encodeURIComponent(user.token)}`, params, authFrame: null };
  }
  const authFrame = JSON.stringify({ type: 'auth', token: user.token });
  return { user, url: WS_URLS[gw], params, authFrame };
}

/** `url` with one more query parameter. */
export function withQuery(url, name, value) {
  return `${url}${url.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(value)}`;
}

/** "websocket: close 4008 (private use): too slow" -> "4008"; other errors -> their kind. */
export function errorCode(err) {
  const text = String((err && (err.error || err.message)) || err);
  const m = text.match(/close (\d{4})/);
  if (m) return m[1];
  if (/connection refused/.test(text)) return 'refused';
  if (/reset by peer/.test(text)) return 'reset';
  if (/timeout|deadline/.test(text)) return 'timeout';
  if (/too many open files/.test(text)) return 'emfile';
  if (/EOF/.test(text)) return 'eof';
  return 'other';
}

/** Error codes after which a send goes again with the same client_msg_id, as an app would. */
export const RETRYABLE_SEND = { unavailable: true, rate_limited: true };

/** The wait before attempt number `attempts` + 1 of a refused send: doubling from 200 ms, at
 * most 3 s, with jitter so that refused VUs do not come back in step. */
export function retryDelayMs(attempts) {
  const backoff = Math.min(3000, 200 * 2 ** Math.max(0, attempts - 1));
  return backoff * (0.5 + Math.random());
}

// Log the first few distinct failures per VU, never a flood.
let logged = 0;
export function logOnce(msg) {
  if (logged < 3) {
    logged += 1;
    console.warn(`VU ${__VU}: ${msg}`);
  }
}

/** Parses a JSON frame; null (and counted by the caller) when it is not JSON. */
export function parseFrame(data) {
  try {
    return JSON.parse(data);
  } catch (_) {
    return null;
  }
}
