// The web client: plain JavaScript, no build step. It speaks only the public contract
// (docs/protocol.md): REST on the origin that served this page, events over the gateway's
// WebSocket. Gateway URL, in order: `?ws=<url>` on the page, `ws_url` from /web/config.json,
// else ws://<this host>:8081/ws.
'use strict';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'chat.session';
const TYPING_SHOW_MS = 3500;
const TYPING_SEND_EVERY_MS = 2000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;

const state = {
  session: null,          // {token, user:{id,username}}
  wsUrl: null,
  ws: null,
  wsReady: false,
  attempt: 0,             // reconnect attempts since the last good connection
  reconnectTimer: null,
  cursor: null,           // cursor of the last event processed (resume point)
  chats: new Map(),       // chat id -> chat object (contract shape)
  messages: new Map(),    // chat id -> Map(seq -> message)
  pending: new Map(),     // client_msg_id -> {chat_id, text, reqId}
  online: new Map(),      // user id -> bool
  contacts: new Set(),    // user ids in my contact list
  typing: new Map(),      // chat id -> Map(user id -> timer)
  lastTypingSent: new Map(),
  activeChat: null,
  everConnected: false,
  olderAt: new Map(),     // chat id -> oldest seq held while older ones remain (0: none)
  loadingOlder: false,   // a later auth_ok without a cursor refills over REST
  reqSeq: 0,
  deliveredSent: new Map(), // chat id -> highest seq reported as delivered
  deliveredTimer: null,     // reports are coalesced: one per chat per burst
  menuFor: null,            // id of the message whose menu is open
  editing: null,            // {chat_id, message_id} while the composer edits a message
};
const DELIVERED_COALESCE_MS = 50;

// ---------------------------------------------------------------- REST

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.session) headers.Authorization = `Bearer ${state.session.token}`;
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new Error(data?.error?.message || `HTTP ${res.status}`);
    err.status = res.status;
    err.code = data?.error?.code;
    if (res.status === 401 && state.session && !path.startsWith('/v1/auth/')) signOut();
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------- session

function saveSession(session) {
  state.session = session;
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function signOut() {
  localStorage.removeItem(SESSION_KEY);
  state.session = null;
  clearTimeout(state.reconnectTimer);
  if (state.ws) { state.ws.onclose = null; state.ws.close(1000); state.ws = null; }
  Object.assign(state, { cursor: null, activeChat: null, wsReady: false, attempt: 0, everConnected: false });
  for (const m of [state.chats, state.messages, state.pending, state.online, state.typing, state.olderAt,
    state.deliveredSent]) m.clear();
  state.menuFor = null;
  state.editing = null;
  state.contacts.clear();
  showAuth();
}

function showAuth() {
  $('app-view').hidden = true;
  $('auth-view').hidden = false;
  $('auth-username').focus();
}

async function authSubmit(kind) {
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  $('auth-error').textContent = '';
  try {
    const data = await api('POST', `/v1/auth/${kind}`, { username, password });
    saveSession({ token: data.token, user: data.user });
    await startApp();
  } catch (e) {
    $('auth-error').textContent = e.message;
  }
}

// ---------------------------------------------------------------- app start

async function startApp() {
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = state.session.user.username;
  renderMessages();
  connect();
  await refreshChats();
}

async function refreshChats() {
  const { chats } = await api('GET', '/v1/chats');
  for (const chat of chats) {
    state.chats.set(chat.id, chat);
    // Every chat's messages up to last_seq have reached this device (as the list).
    reportDelivered(chat.id, chat.last_seq || 0);
  }
  await ensurePeersAreContacts();
  renderChatList();
  if (state.activeChat && state.chats.has(state.activeChat)) await loadHistory(state.activeChat);
}

/// Presence reaches contacts and chat peers, but the initial online state comes from the
/// contact list: the client keeps every private-chat peer in it (as most messengers do).
async function ensurePeersAreContacts() {
  const missing = [];
  for (const chat of state.chats.values()) {
    const peer = peerOf(chat);
    if (peer && !state.contacts.has(peer.user_id)) missing.push(peer.user_id);
  }
  await Promise.all([...new Set(missing)].map((id) =>
    api('PUT', `/v1/contacts/${id}`).catch(() => {})));
  const { contacts } = await api('GET', '/v1/contacts');
  for (const c of contacts) {
    state.contacts.add(c.user.id);
    state.online.set(c.user.id, c.online);
  }
}

async function fetchChat(chatId) {
  const chat = await api('GET', `/v1/chats/${chatId}`);
  state.chats.set(chat.id, chat);
  const peer = peerOf(chat);
  if (peer && !state.contacts.has(peer.user_id)) await ensurePeersAreContacts();
  return chat;
}

function peerOf(chat) {
  if (chat.type !== 'private') return null;
  return chat.members.find((m) => m.user_id !== state.session.user.id) || null;
}

function chatTitle(chat) {
  if (chat.type === 'group') return chat.title || 'group';
  return peerOf(chat)?.username || 'saved messages';
}

function usernameOf(chat, userId) {
  return chat.members.find((m) => m.user_id === userId)?.username || `user ${userId}`;
}

// ---------------------------------------------------------------- WebSocket

function gatewayUrl() {
  if (state.wsUrl) return state.wsUrl;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.hostname}:8081/ws`;
}

function connect() {
  if (!state.session) return;
  clearTimeout(state.reconnectTimer);
  let url;
  try {
    url = new URL(gatewayUrl());
  } catch {
    setConn(`bad gateway URL: ${gatewayUrl()}`);
    return;
  }
  if (state.cursor) url.searchParams.set('since', state.cursor);
  setConn('connecting');
  const ws = new WebSocket(url);
  state.ws = ws;
  state.wsReady = false;
  ws.onopen = () => send({ type: 'auth', token: state.session.token });
  ws.onmessage = (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { return; }
    onFrame(frame);
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.wsReady = false;
    setConn('offline');
    if (e.code === 4001) { signOut(); return; }   // token refused or logged out
    scheduleReconnect();
  };
}

/// Exponential backoff with full jitter: a random delay in [base*2^n / 2, base*2^n], capped.
function scheduleReconnect() {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * ceiling / 2;
  state.attempt += 1;
  setConn(`reconnecting in ${Math.ceil(delay / 1000)}s`);
  state.reconnectTimer = setTimeout(connect, delay);
}

/// Frames other than `auth` wait for auth_ok: until then sends stay pending (flushed on
/// auth_ok), reads go over REST, typing notices are dropped.
function send(frame) {
  const ready = frame.type === 'auth' || state.wsReady;
  if (ready && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function setConn(text) {
  const el = $('conn');
  el.textContent = text;
  el.className = `conn ${text === 'online' ? 'online' : text === 'connecting' ? '' : 'offline'}`;
}

function advanceCursor(cursor) {
  if (cursor) state.cursor = cursor;
}

function onFrame(f) {
  switch (f.type) {
    case 'auth_ok': {
      const resumed = Boolean(state.cursor);
      state.wsReady = true;
      state.attempt = 0;
      setConn('online');
      // Without a cursor nothing can be replayed: refill from REST instead.
      if (!resumed && state.everConnected) refreshChats().catch(console.error);
      state.everConnected = true;
      flushPending();
      break;
    }
    case 'synced': advanceCursor(f.cursor); break;
    case 'new_message': onNewMessage(f.message).catch(console.error); advanceCursor(f.cursor); break;
    case 'message_read': onRead(f); advanceCursor(f.cursor); break;
    case 'message_delivered': onDelivered(f); advanceCursor(f.cursor); break;
    case 'message_updated': onUpdated(f.message); advanceCursor(f.cursor); break;
    case 'presence': onPresence(f); break;
    case 'typing': onTyping(f); break;
    case 'ack':
      if (f.message && f.id?.startsWith('edit-')) onUpdated(f.message);
      else if (f.message) onAck(f.message);
      break;
    case 'resync':
      // The gateway lost events from the bus: replay from our cursor, or refill over REST.
      if (state.cursor) send({ type: 'resume', since: state.cursor });
      else refreshChats().catch(console.error);
      break;
    case 'error':
      if (f.code === 'unauthorized') return;   // close 4001 follows
      if (f.id && f.id.startsWith('send-')) onSendError(f);
      else if (f.id && /^(edit|delete)-/.test(f.id)) showNotice(`could not change the message: ${f.message}`);
      else console.warn('gateway error', f);
      break;
    default: break;
  }
}

// ---------------------------------------------------------------- events

function storeMessage(message) {
  let byseq = state.messages.get(message.chat_id);
  if (!byseq) { byseq = new Map(); state.messages.set(message.chat_id, byseq); }
  const fresh = !byseq.has(message.seq);
  byseq.set(message.seq, message);
  return fresh;
}

async function onNewMessage(message) {
  let chat = state.chats.get(message.chat_id);
  if (!chat) {
    chat = await fetchChat(message.chat_id);   // a chat someone just started with us
  }
  const fresh = storeMessage(message);
  if (message.sender_id === state.session.user.id) state.pending.delete(message.client_msg_id);
  else reportDelivered(message.chat_id, message.seq);
  if (fresh && message.seq > (chat.last_seq || 0)) {
    chat.last_seq = message.seq;
    chat.last_message = message;
    if (message.sender_id === state.session.user.id) {
      setWatermark(chat, state.session.user.id, message.seq);
    }
    chat.unread_count = chat.last_seq - myWatermark(chat);
  }
  typingStopped(message.chat_id, message.sender_id);
  if (chat.id === state.activeChat) { renderMessages(); markRead(chat); }
  renderChatList();
}

function onAck(message) {
  state.pending.delete(message.client_msg_id);
  onNewMessage(message).catch(console.error);
}

function onSendError(f) {
  for (const [cmid, p] of state.pending) {
    if (p.reqId === f.id) {
      p.failed = f.message;
      if (f.code !== 'unavailable') state.pending.delete(cmid);
      if (p.chat_id === state.activeChat) renderMessages();
    }
  }
}

/// A read watermark; reading implies delivery, so the delivered one follows.
function setWatermark(chat, userId, seq) {
  const m = chat.members.find((x) => x.user_id === userId);
  if (m && seq > m.last_read_seq) m.last_read_seq = seq;
  setDelivered(chat, userId, seq);
}

function setDelivered(chat, userId, seq) {
  const m = chat.members.find((x) => x.user_id === userId);
  if (m && seq > (m.last_delivered_seq || 0)) m.last_delivered_seq = seq;
}

function onDelivered(f) {
  const chat = state.chats.get(f.chat_id);
  if (!chat) return;
  setDelivered(chat, f.user_id, f.up_to_seq);
  if (chat.id === state.activeChat) renderMessages();
}

/// An edit or deletion: the message as it now is replaces the one held (same seq).
function onUpdated(message) {
  const byseq = state.messages.get(message.chat_id);
  if (byseq && byseq.has(message.seq)) byseq.set(message.seq, message);
  const chat = state.chats.get(message.chat_id);
  if (chat && chat.last_message?.id === message.id) chat.last_message = message;
  if (state.editing?.message_id === message.id && message.deleted_at) stopEditing();
  if (message.chat_id === state.activeChat) renderMessages();
  renderChatList();
}

/// Tells the server that messages up to `seq` reached this device: one frame per chat per
/// burst (the highest seq), like the read receipts a person's eyes coalesce.
function reportDelivered(chatId, seq) {
  if (seq <= (state.deliveredSent.get(chatId) || 0)) return;
  state.deliveredSent.set(chatId, seq);
  if (state.deliveredTimer) return;
  state.deliveredTimer = setTimeout(flushDelivered, DELIVERED_COALESCE_MS);
}

function flushDelivered() {
  state.deliveredTimer = null;
  for (const [chatId, seq] of state.deliveredSent) {
    const chat = state.chats.get(chatId);
    const mine = chat?.members.find((m) => m.user_id === state.session?.user.id);
    if (!mine || seq <= (mine.last_delivered_seq || 0)) continue;
    setDelivered(chat, mine.user_id, seq);
    const frame = { type: 'delivered', id: `delivered-${++state.reqSeq}`, chat_id: chatId, up_to_seq: seq };
    if (!send(frame)) {
      api('POST', `/v1/chats/${chatId}/delivered`, { up_to_seq: seq }).catch(console.error);
    }
  }
}

function myWatermark(chat) {
  return chat.members.find((m) => m.user_id === state.session.user.id)?.last_read_seq || 0;
}

function onRead(f) {
  const chat = state.chats.get(f.chat_id);
  if (!chat) return;
  setWatermark(chat, f.user_id, f.up_to_seq);
  if (f.user_id === state.session.user.id) chat.unread_count = Math.max(0, chat.last_seq - myWatermark(chat));
  if (chat.id === state.activeChat) renderMessages();
  renderChatList();
}

function onPresence(f) {
  state.online.set(f.user_id, f.status === 'online');
  renderChatList();
  renderHeader();
}

function onTyping(f) {
  let users = state.typing.get(f.chat_id);
  if (!users) { users = new Map(); state.typing.set(f.chat_id, users); }
  clearTimeout(users.get(f.user_id));
  users.set(f.user_id, setTimeout(() => typingStopped(f.chat_id, f.user_id), TYPING_SHOW_MS));
  renderTyping();
}

function typingStopped(chatId, userId) {
  const users = state.typing.get(chatId);
  if (users && users.has(userId)) {
    clearTimeout(users.get(userId));
    users.delete(userId);
    renderTyping();
  }
}

// ---------------------------------------------------------------- actions

async function openChat(chatId) {
  if (state.editing) stopEditing();
  state.menuFor = null;
  state.activeChat = chatId;
  $('app-view').classList.add('in-chat');
  $('composer').hidden = false;
  renderChatList();
  renderHeader();
  renderMessages();
  await loadHistory(chatId);
  $('composer-input').focus();
}

async function loadHistory(chatId) {
  const { messages, has_more: hasMore } = await api('GET', `/v1/chats/${chatId}/messages?limit=100`);
  for (const m of messages) storeMessage(m);
  if (messages.length) reportDelivered(chatId, messages[messages.length - 1].seq);
  if (!state.olderAt.has(chatId)) state.olderAt.set(chatId, hasMore ? messages[0].seq : 0);
  if (chatId === state.activeChat) {
    renderMessages();
    markRead(state.chats.get(chatId));
  }
}

/// Scrolled to the top: fetch the page before the oldest message held, keeping the view still.
async function loadOlder() {
  const chatId = state.activeChat;
  const before = state.olderAt.get(chatId);
  if (!before || state.loadingOlder) return;
  state.loadingOlder = true;
  try {
    const { messages, has_more: hasMore } =
      await api('GET', `/v1/chats/${chatId}/messages?before_seq=${before}&limit=50`);
    for (const m of messages) storeMessage(m);
    state.olderAt.set(chatId, hasMore && messages.length ? messages[0].seq : 0);
    if (chatId === state.activeChat) {
      const list = $('messages');
      const fromBottom = list.scrollHeight - list.scrollTop;
      renderMessages();
      list.scrollTop = list.scrollHeight - fromBottom;
    }
  } finally {
    state.loadingOlder = false;
  }
}

function markRead(chat) {
  if (!chat || document.hidden || chat.id !== state.activeChat) return;
  const seq = chat.last_seq || 0;
  if (seq <= myWatermark(chat)) return;
  setWatermark(chat, state.session.user.id, seq);
  chat.unread_count = 0;
  const frame = { type: 'read', id: `read-${++state.reqSeq}`, chat_id: chat.id, up_to_seq: seq };
  if (!send(frame)) {
    api('POST', `/v1/chats/${chat.id}/read`, { up_to_seq: seq }).catch(console.error);
  }
  renderChatList();
}

function sendMessage(text) {
  const chatId = state.activeChat;
  const clientMsgId = (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
  const p = { chat_id: chatId, text, reqId: null, created: Date.now() };
  state.pending.set(clientMsgId, p);
  sendPending(clientMsgId, p);
  renderMessages();
}

function sendPending(clientMsgId, p) {
  p.reqId = `send-${++state.reqSeq}`;
  p.failed = null;
  send({ type: 'send', id: p.reqId, chat_id: p.chat_id, client_msg_id: clientMsgId, text: p.text });
}

/// Unacknowledged sends go again after a reconnect: the same client_msg_id makes it idempotent.
function flushPending() {
  for (const [cmid, p] of state.pending) sendPending(cmid, p);
}

function startEditing(message) {
  state.menuFor = null;
  state.editing = { chat_id: message.chat_id, message_id: message.id };
  $('edit-bar').hidden = false;
  const input = $('composer-input');
  input.value = message.text || '';
  input.focus();
  renderMessages();
}

function stopEditing() {
  state.editing = null;
  $('edit-bar').hidden = true;
  $('composer-input').value = '';
}

function editMessage(text) {
  const { chat_id: chatId, message_id: messageId } = state.editing;
  stopEditing();
  const frame = { type: 'edit', id: `edit-${++state.reqSeq}`, chat_id: chatId, message_id: messageId, text };
  if (!send(frame)) {
    api('PATCH', `/v1/chats/${chatId}/messages/${messageId}`, { text })
      .then(({ message }) => onUpdated(message))
      .catch((e) => showNotice(`could not edit the message: ${e.message}`));
  }
}

function deleteMessage(message) {
  state.menuFor = null;
  const frame = { type: 'delete', id: `delete-${++state.reqSeq}`, chat_id: message.chat_id, message_id: message.id };
  if (!send(frame)) {
    api('DELETE', `/v1/chats/${message.chat_id}/messages/${message.id}`)
      .catch((e) => showNotice(`could not delete the message: ${e.message}`));
  }
  renderMessages();
}

function showNotice(text) {
  console.warn(text);
  $('typing').textContent = text;
}

function sendTyping() {
  const chatId = state.activeChat;
  const last = state.lastTypingSent.get(chatId) || 0;
  if (Date.now() - last < TYPING_SEND_EVERY_MS) return;
  if (send({ type: 'typing', chat_id: chatId })) state.lastTypingSent.set(chatId, Date.now());
}

async function findUser(username) {
  const { users } = await api('GET', `/v1/users?q=${encodeURIComponent(username)}`);
  const user = users.find((u) => u.username === username);
  if (!user) throw new Error(`no user named ${username}`);
  return user;
}

async function startDirect(username) {
  const user = await findUser(username);
  await api('PUT', `/v1/contacts/${user.id}`).catch(() => {});
  const chat = await api('POST', '/v1/chats', { type: 'private', peer_id: user.id });
  state.chats.set(chat.id, chat);
  await ensurePeersAreContacts();
  closeNewChat();
  await openChat(chat.id);
}

async function startGroup(title, names) {
  const users = await Promise.all(names.map(findUser));
  const chat = await api('POST', '/v1/chats', { type: 'group', title, member_ids: users.map((u) => u.id) });
  state.chats.set(chat.id, chat);
  closeNewChat();
  await openChat(chat.id);
}

/// The new-chat panel lists contacts (with their dots) until a search is typed.
async function showContacts() {
  const { contacts } = await api('GET', '/v1/contacts');
  for (const c of contacts) {
    state.contacts.add(c.user.id);
    state.online.set(c.user.id, c.online);
  }
  if (!$('direct-user').value.trim()) showPeople(contacts.map((c) => c.user));
}

function showPeople(users) {
  $('direct-results').replaceChildren(...users.map((u) => {
    const li = el('li', 'person');
    li.dataset.testid = 'person';
    const dot = el('span', `dot${state.online.get(u.id) ? ' online' : ''}`);
    dot.hidden = !state.contacts.has(u.id);   // presence is known for contacts only
    li.append(dot, el('span', '', u.username));
    li.addEventListener('click', () => startDirect(u.username)
      .catch((err) => { $('new-chat-error').textContent = err.message; }));
    return li;
  }));
}

function closeNewChat() {
  $('new-chat').hidden = true;
  $('new-chat-error').textContent = '';
  $('direct-user').value = '';
  $('direct-results').replaceChildren();
}

// ---------------------------------------------------------------- rendering

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function sortedChats() {
  return [...state.chats.values()].sort((a, b) => {
    if (a.pinned !== b.pinned) return a.pinned ? -1 : 1;
    const ta = a.last_message?.created_at || a.created_at;
    const tb = b.last_message?.created_at || b.created_at;
    return tb.localeCompare(ta);
  });
}

function renderChatList() {
  const list = $('chat-list');
  const items = sortedChats().map((chat) => {
    const li = el('li', `chat-item${chat.id === state.activeChat ? ' active' : ''}`);
    li.dataset.chatId = chat.id;
    li.dataset.testid = 'chat-item';
    const title = chatTitle(chat);
    const avatar = el('span', 'avatar', chat.type === 'group' ? '#' : title.slice(0, 1));
    const peer = peerOf(chat);
    if (peer) {
      const dot = el('span', `dot${state.online.get(peer.user_id) ? ' online' : ''}`);
      dot.dataset.testid = 'chat-dot';
      avatar.append(dot);
    }
    const name = el('span', 'chat-name', title);
    name.dataset.testid = 'chat-name';
    const time = el('span', 'chat-time', chat.last_message ? timeOf(chat.last_message.created_at) : '');
    const lm = chat.last_message;
    const body = lm?.deleted_at ? 'message deleted' : (lm?.text ?? `[${lm?.type}]`);
    const lastText = lm ? `${lm.sender_id === state.session.user.id ? 'You: ' : ''}${body}` : 'No messages yet';
    const last = el('span', 'chat-last', lastText);
    last.dataset.testid = 'chat-last';
    const badge = el('span', 'badge', String(chat.unread_count));
    badge.dataset.testid = 'unread';
    badge.hidden = !chat.unread_count;
    li.append(avatar, name, time, last, badge);
    li.addEventListener('click', () => openChat(chat.id).catch(console.error));
    return li;
  });
  if (items.length === 0) items.push(el('li', 'empty', 'No chats yet: start one with +'));
  list.replaceChildren(...items);
  const unread = [...state.chats.values()].reduce((n, c) => n + (c.unread_count || 0), 0);
  document.title = unread ? `(${unread}) chat` : 'chat';
}

function renderHeader() {
  const chat = state.chats.get(state.activeChat);
  const dot = $('conv-dot');
  if (!chat) {
    $('conv-title').textContent = 'No chat selected';
    $('conv-sub').textContent = '';
    dot.hidden = true;
    return;
  }
  $('conv-title').textContent = chatTitle(chat);
  const peer = peerOf(chat);
  if (peer) {
    const online = state.online.get(peer.user_id);
    dot.hidden = false;
    dot.className = `dot${online ? ' online' : ''}`;
    dot.dataset.state = online ? 'online' : 'offline';
    $('conv-sub').textContent = online ? 'online' : 'offline';
  } else {
    dot.hidden = true;
    $('conv-sub').textContent = `${chat.members.length} member${chat.members.length === 1 ? '' : 's'}`;
  }
}

/// Read by every other member (private: the peer) → ✓✓ in blue; on a device of every other
/// member → ✓✓; stored → ✓; queued → 🕓.
function tickFor(chat, message) {
  const others = chat.members.filter((m) => m.user_id !== state.session.user.id);
  const all = (pred) => others.length > 0 && others.every(pred);
  const read = all((m) => m.last_read_seq >= message.seq);
  const delivered = read || all((m) => Math.max(m.last_delivered_seq || 0, m.last_read_seq) >= message.seq);
  const t = el('span', `tick${read ? ' read' : delivered ? ' delivered' : ''}`, delivered ? '✓✓' : '✓');
  t.dataset.testid = read ? 'tick-read' : delivered ? 'tick-delivered' : 'tick-sent';
  return t;
}

/// Who may change a message: its sender edits and deletes; a group's owner deletes too.
function canDelete(chat, message) {
  const me = state.session.user.id;
  if (message.sender_id === me) return true;
  return chat.type === 'group' && chat.members.some((m) => m.user_id === me && m.role === 'owner');
}

function messageMenu(chat, m) {
  const menu = el('div', 'msg-menu');
  menu.dataset.testid = 'msg-menu';
  if (m.sender_id === state.session.user.id && m.text !== null) {
    const edit = el('button', 'secondary', 'Edit');
    edit.type = 'button';
    edit.dataset.testid = 'msg-edit';
    edit.addEventListener('click', (e) => { e.stopPropagation(); startEditing(m); });
    menu.append(edit);
  }
  const del = el('button', 'danger', 'Delete');
  del.type = 'button';
  del.dataset.testid = 'msg-delete';
  del.addEventListener('click', (e) => { e.stopPropagation(); deleteMessage(m); });
  menu.append(del);
  return menu;
}

function renderMessages() {
  const list = $('messages');
  const chat = state.chats.get(state.activeChat);
  if (!chat) { list.replaceChildren(el('li', 'empty', 'Pick a chat on the left')); return; }
  const me = state.session.user.id;
  const stored = [...(state.messages.get(chat.id)?.values() || [])].sort((a, b) => a.seq - b.seq);
  const items = stored.map((m) => {
    const mine = m.sender_id === me;
    const li = el('li', `msg${mine ? ' mine' : ''}`);
    li.dataset.testid = 'message';
    li.dataset.seq = m.seq;
    if (chat.type === 'group' && !mine) li.append(el('span', 'from', usernameOf(chat, m.sender_id)));
    if (m.deleted_at) {
      li.classList.add('deleted');
      const gone = el('span', 'text', 'message deleted');
      gone.dataset.testid = 'deleted';
      li.append(gone);
    } else {
      li.append(el('span', 'text', m.text ?? `[${m.type}]`));
    }
    const meta = el('span', 'meta');
    if (m.edited_at && !m.deleted_at) {
      const edited = el('span', 'edited', 'edited');
      edited.dataset.testid = 'edited';
      meta.append(edited);
    }
    meta.append(document.createTextNode(timeOf(m.created_at)));
    if (mine) meta.append(tickFor(chat, m));
    if (!m.deleted_at && canDelete(chat, m)) {
      const btn = el('button', 'menu-btn', '⋯');
      btn.type = 'button';
      btn.title = 'Message menu';
      btn.dataset.testid = 'msg-menu-btn';
      btn.addEventListener('click', (e) => {
        e.stopPropagation();
        state.menuFor = state.menuFor === m.id ? null : m.id;
        renderMessages();
      });
      meta.append(btn);
    }
    li.append(meta);
    if (state.menuFor === m.id && !m.deleted_at) li.append(messageMenu(chat, m));
    return li;
  });
  for (const p of state.pending.values()) {
    if (p.chat_id !== chat.id) continue;
    const li = el('li', 'msg mine pending');
    li.dataset.testid = 'message';
    li.append(el('span', 'text', p.text));
    const meta = el('span', 'meta', p.failed ? `not sent: ${p.failed}` : '');
    const t = el('span', 'tick pending', '🕓');
    meta.append(t);
    li.append(meta);
    items.push(li);
  }
  if (items.length === 0) items.push(el('li', 'empty', 'No messages yet. Say hello!'));
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  if (state.olderAt.get(chat.id)) items.unshift(el('li', 'older muted', 'scroll up for older messages'));
  list.replaceChildren(...items);
  if (atBottom || stored.length < 30) list.scrollTop = list.scrollHeight;
  renderTyping();
}

function renderTyping() {
  const chat = state.chats.get(state.activeChat);
  const users = chat ? state.typing.get(chat.id) : null;
  const names = users ? [...users.keys()].map((id) => usernameOf(chat, id)) : [];
  $('typing').textContent = names.length === 0 ? ''
    : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

// ---------------------------------------------------------------- wiring

async function loadConfig() {
  const fromQuery = new URLSearchParams(location.search).get('ws');
  if (fromQuery) { state.wsUrl = fromQuery; return; }
  try {
    const res = await fetch('/web/config.json');
    if (res.ok) state.wsUrl = (await res.json()).ws_url || null;
  } catch { /* served elsewhere: use the default */ }
}

function wire() {
  $('auth-form').addEventListener('submit', (e) => { e.preventDefault(); authSubmit('login'); });
  $('register-btn').addEventListener('click', () => {
    if ($('auth-form').reportValidity()) authSubmit('register');
  });
  $('logout-btn').addEventListener('click', async () => {
    await api('POST', '/v1/auth/logout').catch(() => {});
    signOut();
  });
  $('new-chat-btn').addEventListener('click', () => {
    $('new-chat').hidden = !$('new-chat').hidden;
    if (!$('new-chat').hidden) {
      $('direct-user').focus();
      showContacts().catch(console.error);
    }
  });
  const tab = (direct) => {
    $('tab-direct').classList.toggle('active', direct);
    $('tab-group').classList.toggle('active', !direct);
    $('direct-form').hidden = !direct;
    $('group-form').hidden = direct;
  };
  $('tab-direct').addEventListener('click', () => tab(true));
  $('tab-group').addEventListener('click', () => tab(false));
  let searchTimer = null;
  $('direct-user').addEventListener('input', () => {
    clearTimeout(searchTimer);
    const q = $('direct-user').value.trim().toLowerCase();
    if (!q) { showContacts().catch(console.error); return; }
    searchTimer = setTimeout(async () => {
      try {
        const { users } = await api('GET', `/v1/users?q=${encodeURIComponent(q)}`);
        showPeople(users.filter((u) => u.id !== state.session.user.id));
      } catch { /* ignore while typing */ }
    }, 200);
  });
  $('direct-form').addEventListener('submit', (e) => {
    e.preventDefault();
    startDirect($('direct-user').value.trim().toLowerCase())
      .catch((err) => { $('new-chat-error').textContent = err.message; });
  });
  $('group-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const names = $('group-members').value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    startGroup($('group-title').value.trim(), names)
      .catch((err) => { $('new-chat-error').textContent = err.message; });
  });
  const input = $('composer-input');
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !state.activeChat) return;
    input.value = '';
    if (state.editing) editMessage(text);
    else sendMessage(text);
  });
  $('messages').addEventListener('scroll', () => {
    if ($('messages').scrollTop < 40) loadOlder().catch(console.error);
  });
  $('edit-cancel').addEventListener('click', () => { stopEditing(); renderMessages(); });
  $('back-btn').addEventListener('click', () => {
    state.activeChat = null;
    $('app-view').classList.remove('in-chat');
    $('composer').hidden = true;
    renderChatList();
    renderHeader();
    renderMessages();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('composer').requestSubmit(); }
    if (e.key === 'Escape' && state.editing) { stopEditing(); renderMessages(); }
  });
  input.addEventListener('input', () => {
    if (state.activeChat && !state.editing && input.value.trim()) sendTyping();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) markRead(state.chats.get(state.activeChat));
  });
  // Reconnect at once when the network comes back instead of waiting out the backoff.
  window.addEventListener('online', () => { if (state.session && !state.ws) connect(); });
}

async function main() {
  wire();
  await loadConfig();
  const saved = localStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      state.session = JSON.parse(saved);
      await startApp();
      return;
    } catch (e) {
      console.warn('saved session refused', e);
      signOut();
      return;
    }
  }
  showAuth();
}

main();
