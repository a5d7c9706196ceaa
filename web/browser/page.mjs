// The chat page in a real browser: Chromium (Debian's) driven by playwright-core.
// Run by crates/tidewire/tests/web.rs against two servers on port 0:
//   TIDEWIRE_URL           the synthetic backend at a slow pace (answers take seconds)
//   TIDEWIRE_SCRIPTED_URL  a scripted language model with the whole pipeline
//                          (follow-up questions; an answer full of HTML for "xss")
//   TIDEWIRE_ARTIFACTS     where the screenshots go
// Each check prints; the first failure exits 1. Ends with "all checks passed".

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const PACED = process.env.TIDEWIRE_URL;
const SCRIPTED = process.env.TIDEWIRE_SCRIPTED_URL;
const ARTIFACTS = process.env.TIDEWIRE_ARTIFACTS || 'artifacts';
const GUARDED = process.env.TIDEWIRE_AUTH_URL;
const KEY = process.env.TIDEWIRE_AUTH_KEY;
mkdirSync(ARTIFACTS, { recursive: true });

function check(condition, what, detail = '') {
  if (!condition) {
    console.log(`FAILED: ${what} ${detail}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const squash = (text) => text.replace(/\s+/g, ' ').trim();

async function stored(base, conversationId) {
  const response = await fetch(`${base}/api/conversations/${conversationId}/messages`);
  const body = await response.json();
  return body.messages;
}

function conversationOf(page) {
  const match = page.url().match(/#c=(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

/** The text of the last answer on the page. */
async function lastAnswer(page) {
  return squash(await page.locator('article.assistant .bubble').last().innerText());
}

async function send(page, text) {
  await page.locator('#input').fill(text);
  await page.locator('#input').press('Enter');
}

/** Waits until the last answer has its end (the Send button is back). */
async function answered(page, timeout = 30_000) {
  await page.locator('#send').waitFor({ state: 'visible', timeout });
}

/** Waits until the last answer shows `words` words at least. */
async function streamed(page, words) {
  await page.waitForFunction(
    (n) => {
      const all = document.querySelectorAll('article.assistant .bubble');
      const last = all[all.length - 1];
      return last && last.innerText.trim().split(/\s+/).length >= n && !last.querySelector('.thinking');
    },
    words,
    { timeout: 20_000 },
  );
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));

  // --- Send, and the answer streams with a cursor ---------------------------------
  await page.goto(PACED);
  check(await page.locator('#input').isEnabled(), 'the page loads with the input ready');
  await send(page, 'Tell me about tides');
  await streamed(page, 3);
  check(await page.locator('#input').isDisabled(), 'the input is disabled while the answer streams');
  check(await page.locator('#stop').isVisible(), 'Stop is shown while it streams');
  check((await page.locator('article.assistant .cursor').count()) === 1, 'a cursor follows the text');
  check(
    (await page.locator('article.assistant .bubble[aria-live="polite"]').count()) === 1,
    'the answer is an aria-live region',
  );
  await answered(page);
  const first = conversationOf(page);
  check(Boolean(first), 'the conversation is in the address', page.url());
  let messages = await stored(PACED, first);
  check(messages[1].status === 'complete', 'the answer is stored complete');
  check((await lastAnswer(page)) === squash(messages[1].content), 'the page shows exactly the stored answer');
  check((await page.locator('#conversations li').count()) >= 1, 'the conversation is in the sidebar');
  await page.screenshot({ path: join(ARTIFACTS, 'desktop.png'), fullPage: true });

  // --- Stop cancels the run on the server -----------------------------------------
  await send(page, 'A long answer, please');
  await streamed(page, 3);
  await page.locator('#stop').click();
  await answered(page);
  check((await page.locator('article.assistant .status-tag').last().innerText()) === 'Stopped', 'the answer says it was stopped');
  messages = await stored(PACED, first);
  check(messages[3].status === 'cancelled', 'the stored answer is cancelled', messages[3].status);
  check((await lastAnswer(page)) === squash(messages[3].content), 'the stopped text is what was stored');

  // --- Reload in the middle of an answer: it goes on, exactly ---------------------
  await send(page, 'Another one');
  await streamed(page, 4);
  await page.reload();
  await streamed(page, 1);
  check(await page.locator('#input').isDisabled(), 'after the reload the answer is followed again');
  await answered(page);
  messages = await stored(PACED, first);
  check(messages[5].status === 'complete', 'the reloaded answer finished');
  check((await lastAnswer(page)) === squash(messages[5].content), 'after a reload the text is exact');

  // --- Offline and back online mid-answer: exact text -----------------------------
  await send(page, 'And one with a network cut');
  await streamed(page, 4);
  await context.setOffline(true);
  await page.waitForTimeout(1500);
  await context.setOffline(false);
  await answered(page, 45_000);
  messages = await stored(PACED, first);
  check(messages[7].status === 'complete', 'the answer finished across the cut');
  check((await lastAnswer(page)) === squash(messages[7].content), 'after going offline the text is exact');

  // --- Two tabs: the second sees the answer written live --------------------------
  const second = await context.newPage();
  await second.goto(`${PACED}/#c=${encodeURIComponent(first)}`);
  await second.locator('article.assistant').nth(3).waitFor();
  await send(page, 'Seen from two tabs');
  await second.locator('article.assistant').nth(4).waitFor({ timeout: 10_000 });
  check(await second.locator('#input').isDisabled(), 'the second tab follows the answer live');
  await streamed(second, 3);
  await answered(second);
  await answered(page);
  messages = await stored(PACED, first);
  check((await lastAnswer(second)) === squash(messages[9].content), 'the second tab has the exact text');
  await second.close();

  // --- Phone width ------------------------------------------------------------------
  await page.setViewportSize({ width: 390, height: 844 });
  check(await page.locator('#toggle-sidebar').isVisible(), 'on a phone the sidebar is behind a button');
  await page.waitForTimeout(400); // the sidebar's slide
  await page.screenshot({ path: join(ARTIFACTS, 'phone.png'), fullPage: true });
  await page.locator('#toggle-sidebar').click();
  await page.locator('#new-chat').click();
  check((await page.locator('article').count()) === 0, 'New chat empties the page');
  await page.setViewportSize({ width: 1280, height: 800 });

  // --- Follow-ups, sources and Markdown, with a language model ---------------------
  const scripted = await context.newPage();
  scripted.on('pageerror', (error) => errors.push(String(error)));
  await scripted.goto(SCRIPTED);
  await send(scripted, 'What is a run?');
  await answered(scripted);
  const followUps = scripted.locator('.follow-ups button');
  check((await followUps.count()) === 2, 'two follow-up questions as buttons');
  check((await scripted.locator('article.assistant code').count()) >= 1, 'inline code is rendered');
  check((await scripted.locator('article.assistant pre code').count()) === 1, 'a code block is rendered');
  check((await scripted.locator('.tools li').count()) === 0, 'no tool calls for this answer');
  const question = await followUps.first().innerText();
  await followUps.first().click();
  await answered(scripted);
  const asked = await scripted.locator('article.user .bubble').last().innerText();
  check(asked === question, 'a follow-up click asks it', asked);

  // --- Documents: uploaded from the page, then sources under the answer -----------
  await scripted.locator('#upload-input').setInputFiles({
    name: 'harbour.md',
    mimeType: 'text/markdown',
    buffer: Buffer.from('# Harbour\n\nThe harbour master keeps a ledger of albatross sightings.'),
  });
  await scripted.locator('#notice', { hasText: 'Added 1 document' }).waitFor();
  check(true, 'a file chosen in the page is uploaded');
  // Dropped on the page.
  await scripted.evaluate(() => {
    const data = new DataTransfer();
    data.items.add(new File(['# Lighthouse\n\nThe keeper lights the lamp at dusk.'], 'lighthouse.md', { type: 'text/markdown' }));
    window.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
  });
  await scripted.locator('#notice', { hasText: 'Added 1 document' }).waitFor();
  const documents = await (await fetch(`${SCRIPTED}/api/documents`)).json();
  const names = documents.documents.map((d) => d.name);
  check(names.includes('lighthouse.md') && names.includes('harbour.md'), 'a dropped file is uploaded', names.join());
  await send(scripted, 'Who keeps the albatross ledger?');
  await answered(scripted);
  const sources = scripted.locator('article.assistant').last().locator('.sources');
  check(await sources.isVisible(), 'sources are shown under the answer');
  check((await sources.textContent()).includes('harbour.md'), 'with the document name');
  check((await scripted.locator('article.assistant').last().locator('.meta .score').count()) === 1, 'and the quality score');

  // --- Tool calls, with their name and duration -------------------------------------
  await send(scripted, 'Use the tool');
  await answered(scripted);
  const tools = scripted.locator('article.assistant').last().locator('.tools li');
  check((await tools.count()) === 1, 'the tool call is shown');
  check(/^clock · \d+ ms$/.test(await tools.innerText()), 'with its name and duration', await tools.innerText());
  check((await lastAnswer(scripted)) === 'The clock says noon.', 'and the answer after it');

  // --- Model output is text, never HTML -------------------------------------------
  await send(scripted, 'xss');
  await answered(scripted);
  const pwned = await scripted.evaluate(() => window.__pwned);
  check(pwned === undefined, 'no script from the answer ran', String(pwned));
  check((await scripted.locator('article.assistant img').count()) === 0, 'no element from the answer was created');
  check(
    (await scripted.locator('article.assistant .bubble').last().innerText()).includes('<img src=x onerror='),
    'the markup shows as text',
  );
  await scripted.screenshot({ path: join(ARTIFACTS, 'markdown-and-follow-ups.png'), fullPage: true });

  // --- Authentication on: the page asks for a key, keeps it, and uses it ---------
  const guarded = await context.newPage();
  guarded.on('pageerror', (error) => errors.push(String(error)));
  await guarded.goto(GUARDED);
  await guarded.locator('#key-dialog[open]').waitFor({ timeout: 10_000 });
  check(true, 'without a key the page asks for one');
  await guarded.locator('#key-input').fill(KEY);
  await guarded.locator('#key-form button[value="save"]').click();
  await send(guarded, 'Am I let in?');
  await answered(guarded);
  const status = await guarded.locator('article.assistant .status-tag').count();
  check(status === 0 && (await lastAnswer(guarded)).length > 0, 'with the key the answer comes');
  check((await guarded.locator('#conversations li').count()) === 1, 'and the conversation is listed');
  check(
    (await guarded.evaluate(() => localStorage.getItem('tidewire.token'))) === KEY,
    'the key is kept in the browser',
  );

  check(errors.length === 0, 'no script errors on the pages', errors.join('\n'));
  console.log('all checks passed');
} finally {
  await browser.close();
}
