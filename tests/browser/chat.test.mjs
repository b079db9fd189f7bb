// Two browser contexts (two people) chat through the web client served by chat-api:
// register, start a 1:1 chat by username, online dot goes on when the peer connects, messages
// both ways, unread badge and last message in the list, typing indicator, delivered and read
// ticks, editing and deleting from a message's menu, and the dot goes off when the peer's
// browser closes. Run by tests/browser/run.sh, which provides
// API_URL, WS_URL, ARTIFACTS and CHROMIUM. SCREENSHOT_TO=<png> also copies the main screenshot.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const API_URL = mustEnv('API_URL');
const WS_URL = mustEnv('WS_URL');
const ARTIFACTS = mustEnv('ARTIFACTS');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 15_000;

function mustEnv(name) {
  const v = process.env[name];
  if (!v) { console.error(`FAIL: ${name} is not set (run tests/browser/run.sh)`); process.exit(2); }
  return v;
}

const problems = [];
let step = 'start';
function log(msg) { step = msg; console.log(`  - ${msg}`); }

/// Fails on CSP violations and uncaught page errors: the page must work under its own policy.
function watch(page, who) {
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) {
      problems.push(`${who}: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.setDefaultTimeout(TIMEOUT);
  return page;
}

async function shot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

async function register(page, username) {
  await page.goto(`${API_URL}/`);
  await page.getByTestId('username').fill(username);
  await page.getByTestId('password').fill('correct horse battery');
  await page.getByTestId('register').click();
  await page.getByTestId('me').filter({ hasText: username }).waitFor();
  await page.getByTestId('conn').filter({ hasText: /^online$/ }).waitFor();
}

async function expectDot(page, state) {
  await page.locator(`[data-testid="peer-dot"][data-state="${state}"]`).waitFor();
}

// run.sh gives every run a fresh database, so plain names are free.
const alice = process.env.ALICE || 'alice';
const bob = process.env.BOB || 'bob';

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
let failed = null;
let pageA;
let pageB;
try {
  const viewport = { width: 1100, height: 640 };
  const ctxA = await browser.newContext({ viewport });
  const ctxB = await browser.newContext({ viewport });

  log(`bob registers (${bob}), then closes his tab (offline)`);
  pageB = watch(await ctxB.newPage(), 'bob');
  await register(pageB, bob);
  await pageB.close();

  log(`alice registers (${alice}) and starts a 1:1 chat with bob by username`);
  pageA = watch(await ctxA.newPage(), 'alice');
  await register(pageA, alice);
  await pageA.getByTestId('new-chat').click();
  await pageA.getByTestId('direct-user').fill(bob);
  await pageA.getByTestId('direct-start').click();
  await pageA.getByTestId('conv-title').filter({ hasText: bob }).waitFor();
  await expectDot(pageA, 'offline');

  // Alice's page found the gateway through /web/config.json; bob's names it with ?ws=.
  log('bob opens the page again (session kept, gateway given as ?ws=): alice sees his dot turn online');
  pageB = watch(await ctxB.newPage(), 'bob');
  const viaQuery = `${WS_URL}?via=query`;   // the gateway ignores unknown parameters
  await pageB.goto(`${API_URL}/?ws=${encodeURIComponent(viaQuery)}`);
  await pageB.getByTestId('conn').filter({ hasText: /^online$/ }).waitFor();
  const urls = [await pageA.evaluate(() => state.ws.url), await pageB.evaluate(() => state.ws.url)];
  if (!urls[0].startsWith(WS_URL) || urls[0].includes('via=query') || !urls[1].includes('via=query')) {
    throw new Error(`gateway URLs: alice ${urls[0]} (want ${WS_URL} from config), bob ${urls[1]} (want ?ws=)`);
  }
  await expectDot(pageA, 'online');

  log("alice sends; bob's page has it without the chat open: alice sees two grey ticks (delivered), bob an unread badge");
  await pageA.getByTestId('composer').fill('Hello Bob!');
  await pageA.getByTestId('send').click();
  await pageA.getByTestId('tick-delivered').first().waitFor();
  const bobItem = pageB.locator('[data-testid="chat-item"]').filter({ hasText: alice });
  await bobItem.getByTestId('unread').filter({ hasText: '1' }).waitFor();
  await bobItem.getByTestId('chat-last').filter({ hasText: 'Hello Bob!' }).waitFor();
  await shot(pageB, '1-bob-unread');

  log('bob opens the chat: alice sees the read tick, bob sees alice online');
  await bobItem.click();
  await pageB.getByTestId('message').filter({ hasText: 'Hello Bob!' }).waitFor();
  await pageA.getByTestId('tick-read').first().waitFor();
  await expectDot(pageB, 'online');
  if (await bobItem.getByTestId('unread').isVisible()) throw new Error('unread badge still shown after reading');

  log('bob types: alice sees the typing indicator');
  await pageB.getByTestId('composer').pressSequentially('Hi Al', { delay: 30 });
  await pageA.getByTestId('typing').filter({ hasText: `${bob} is typing` }).waitFor();

  log('bob sends: alice gets it live and, with the chat open, reads it (bob sees the tick)');
  await pageB.getByTestId('composer').pressSequentially('ice, good to see you.');
  await pageB.getByTestId('composer').press('Enter');
  await pageA.getByTestId('message').filter({ hasText: 'Hi Alice, good to see you.' }).waitFor();
  await pageB.getByTestId('tick-read').first().waitFor();
  await pageA.getByTestId('typing').filter({ hasText: /^$/ }).waitFor();

  log('a few more messages both ways, in order');
  for (const [page, text] of [[pageA, 'How is the new chat server?'], [pageB, 'Fast. Messages arrive instantly.'],
    [pageA, 'And the read ticks work too ✓✓']]) {
    await page.getByTestId('composer').fill(text);
    await page.getByTestId('composer').press('Enter');
    await pageA.getByTestId('message').filter({ hasText: text }).waitFor();
    await pageB.getByTestId('message').filter({ hasText: text }).waitFor();
  }
  const textsA = await pageA.getByTestId('message').locator('.text').allTextContents();
  const textsB = await pageB.getByTestId('message').locator('.text').allTextContents();
  if (JSON.stringify(textsA) !== JSON.stringify(textsB) || textsA.length !== 5) {
    throw new Error(`histories differ: ${JSON.stringify(textsA)} vs ${JSON.stringify(textsB)}`);
  }
  await pageA.getByTestId('tick-read').nth(2).waitFor();

  log("bob's network drops: his page backs off, alice sends meanwhile, bob resumes from his cursor");
  await ctxB.setOffline(true);
  await pageB.evaluate(() => state.ws.close(3000, 'test: network lost'));
  await pageB.getByTestId('conn').filter({ hasText: /reconnecting/ }).waitFor();
  await expectDot(pageA, 'offline');
  const missed = ['Are you still there?', 'Sent while you were offline.'];
  for (const text of missed) {
    await pageA.getByTestId('composer').fill(text);
    await pageA.getByTestId('composer').press('Enter');
    await pageA.getByTestId('message').filter({ hasText: text }).locator('[data-testid="tick-sent"]').waitFor();
  }
  // At least one reconnect attempt failed while offline: the backoff is in play.
  await pageB.waitForFunction(() => state.attempt >= 2, null, { timeout: TIMEOUT });
  const cursor = await pageB.evaluate(() => state.cursor);
  if (!cursor) throw new Error('bob has no cursor to resume from');
  // The missed messages must come from the WebSocket replay (?since=), not a REST refill.
  const refills = [];
  const countRefill = (req) => { if (req.url().includes('/v1/chats')) refills.push(req.url()); };
  pageB.on('request', countRefill);
  await ctxB.setOffline(false);
  await pageB.getByTestId('conn').filter({ hasText: /^online$/ }).waitFor();
  for (const text of missed) await pageB.getByTestId('message').filter({ hasText: text }).waitFor();
  pageB.off('request', countRefill);
  if (refills.length) throw new Error(`resume refilled over REST instead of replaying: ${refills}`);
  await expectDot(pageA, 'online');
  await pageA.getByTestId('tick-read').nth(4).waitFor();

  log('alice opens the new-chat panel: bob is listed among her contacts, online');
  await pageA.getByTestId('new-chat').click();
  await pageA.locator('[data-testid="person"]').filter({ hasText: bob }).locator('.dot.online').waitFor();

  log('alice creates a group with bob; bob gets its first message live');
  await pageA.locator('#tab-group').click();
  await pageA.getByTestId('group-title').fill('Weekend plans');
  await pageA.getByTestId('group-members').fill(bob);
  await pageA.getByTestId('group-start').click();
  await pageA.getByTestId('conv-title').filter({ hasText: 'Weekend plans' }).waitFor();
  await pageA.getByTestId('composer').fill('Hiking on Saturday?');
  await pageA.getByTestId('composer').press('Enter');
  const bobGroup = pageB.locator('[data-testid="chat-item"]').filter({ hasText: 'Weekend plans' });
  await bobGroup.getByTestId('chat-last').filter({ hasText: 'Hiking on Saturday?' }).waitFor();
  await bobGroup.getByTestId('unread').filter({ hasText: '1' }).waitFor();

  log('the group gets 120 more messages; bob reloads, opens it, scrolls up to the first ones');
  await pageA.evaluate(async (chatId) => {
    for (let i = 1; i <= 120; i += 1) {
      await api('POST', `/v1/chats/${chatId}/messages`, { client_msg_id: `bulk-${i}`, text: `bulk message ${i}` });
    }
  }, await pageA.evaluate(() => state.activeChat));
  await pageB.reload();
  await pageB.getByTestId('conn').filter({ hasText: /^online$/ }).waitFor();
  await bobGroup.click();
  await pageB.getByTestId('message').filter({ hasText: 'bulk message 120' }).waitFor();
  const firstPage = await pageB.getByTestId('message').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  if (firstPage.length !== 100 || firstPage[0] !== 22) throw new Error(`first page of history: ${firstPage}`);
  const older = [];
  const countOlder = (req) => { if (req.url().includes('before_seq=')) older.push(req.url()); };
  pageB.on('request', countOlder);
  for (let i = 0; i < 10 && older.length === 0; i += 1) {
    await pageB.getByTestId('messages').evaluate((el) => { el.scrollTop = 0; });
    await pageB.waitForTimeout(200);
  }
  await pageB.getByTestId('message').filter({ hasText: 'Hiking on Saturday?' }).waitFor();
  pageB.off('request', countOlder);
  if (!older.length) throw new Error('scrolling up fetched no older page');
  const seqs = await pageB.getByTestId('message').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  if (seqs.length !== 121 || seqs.some((seq, i) => seq !== i + 1)) throw new Error(`group history: ${seqs}`);

  await pageA.locator('[data-testid="chat-item"]').filter({ hasText: bob }).click();
  await pageA.getByTestId('conv-title').filter({ hasText: bob }).waitFor();
  await pageA.getByTestId('tick-read').nth(2).waitFor();

  log('alice sends while bob looks at the group: delivered (grey ✓✓), then read (blue) when he opens the chat');
  await pageA.getByTestId('composer').fill('Did this reach your phone?');
  await pageA.getByTestId('composer').press('Enter');
  const reached = pageA.getByTestId('message').filter({ hasText: 'Did this reach your phone?' });
  await reached.getByTestId('tick-delivered').waitFor();
  await shot(pageA, '2a-alice-delivered');
  await pageB.locator('[data-testid="chat-item"]').filter({ hasText: alice }).click();
  await pageB.getByTestId('message').filter({ hasText: 'Did this reach your phone?' }).waitFor();
  await reached.getByTestId('tick-read').waitFor();

  log("alice edits it from the message's menu: both see the new text, marked edited, at the same seq");
  const seq = await reached.getAttribute('data-seq');
  const editedOn = (page) => page.locator(`[data-testid="message"][data-seq="${seq}"]`);
  await editedOn(pageA).getByTestId('msg-menu-btn').click();
  await editedOn(pageA).getByTestId('msg-edit').click();
  await pageA.getByTestId('edit-bar').waitFor();
  await pageA.getByTestId('composer').fill('Has this reached your phone?');
  await pageA.getByTestId('composer').press('Enter');
  for (const page of [pageA, pageB]) {
    await editedOn(page).locator('.text').filter({ hasText: /^Has this reached your phone\?$/ }).waitFor();
    await editedOn(page).getByTestId('edited').waitFor();
  }
  if (await pageA.getByTestId('edit-bar').isVisible()) throw new Error('the edit bar stayed open');
  if (await pageB.getByTestId('msg-menu-btn').count() !== await pageB.locator('.msg.mine').count()) {
    throw new Error("bob is offered a menu on alice's messages in a private chat");
  }

  log('bob sends a message to the wrong chat and deletes it: both see "message deleted" in its place');
  await pageB.getByTestId('composer').fill('Oops, meant for someone else');
  await pageB.getByTestId('composer').press('Enter');
  const typo = pageB.getByTestId('message').filter({ hasText: 'Oops, meant for someone else' });
  await typo.getByTestId('tick-read').waitFor();
  const typoSeq = await typo.getAttribute('data-seq');
  const deletedOn = (page) => page.locator(`[data-testid="message"][data-seq="${typoSeq}"]`);
  await deletedOn(pageB).getByTestId('msg-menu-btn').click();
  await deletedOn(pageB).getByTestId('msg-delete').click();
  for (const page of [pageA, pageB]) {
    await deletedOn(page).getByTestId('deleted').filter({ hasText: 'message deleted' }).waitFor();
    if (await deletedOn(page).getByTestId('msg-menu-btn').count()) throw new Error('a deleted message keeps its menu');
  }
  await pageA.locator('[data-testid="chat-item"]').filter({ hasText: bob })
    .getByTestId('chat-last').filter({ hasText: 'message deleted' }).waitFor();
  const seqsA = await pageA.getByTestId('message').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  if (seqsA.some((s, i) => s !== i + 1)) throw new Error(`a tombstone left a gap: ${seqsA}`);

  const main = await shot(pageA, '2-alice-chat');
  await shot(pageB, '3-bob-chat');
  if (process.env.SCREENSHOT_TO) copyFileSync(main, process.env.SCREENSHOT_TO);

  log("bob's browser closes: alice sees his dot turn offline");
  await ctxB.close();
  await expectDot(pageA, 'offline');
  await shot(pageA, '4-alice-bob-offline');

  if (problems.length) throw new Error(`page problems:\n    ${problems.join('\n    ')}`);
} catch (e) {
  failed = e;
  for (const [page, who] of [[pageA, 'alice'], [pageB, 'bob']]) {
    if (page && !page.isClosed()) await shot(page, `failure-${who}`).catch(() => {});
  }
} finally {
  await browser.close();
}
if (failed) {
  console.error(`FAIL at step "${step}": ${failed.message}`);
  process.exit(1);
}
console.log('browser test: all steps passed');
