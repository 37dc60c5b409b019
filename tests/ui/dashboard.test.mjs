// The dashboard with open access, step by step as a user would: every view loads cleanly,
// a pipeline is created from the page (a 422 shown at its field first), events are posted and
// counted, a key is queried, an output record arrives live, a checkpoint is taken, listed and
// restored, and the window chart draws.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertClean, openBrowser, startServer } from './harness.mjs';

// Minute-aligned event times, so that the windows are known.
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
let server;
let browser;
let page;

before(async () => {
  server = await startServer();
  browser = await openBrowser(server.base);
  page = browser.page;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function go(hash) {
  await page.goto(`${server.base}/ui/${hash}`);
}

test('the pipelines view loads, empty', async () => {
  await go('#/');
  await page.getByText('No pipeline yet.').waitFor();
  await page.getByText('open access').waitFor();
  await browser.shoot('pipelines-empty');
  assertClean(browser, assert);
});

test('a 422 is shown at the fields it names, then the pipeline is created', async () => {
  await go('#/new');
  await page.getByLabel('Name', { exact: true }).fill('Clicks!');
  await page.locator('#op-2').fill('{"name": "sessions", "kind": "session", "gap": "30 minutes"}');
  await page.getByRole('button', { name: 'Create pipeline' }).click();
  await page.locator('#name-err').filter({ hasText: /./ }).waitFor();
  assert.match(await page.locator('#op-2-err').innerText(), /operators\[2\]\.gap/);
  assert.equal(await page.locator('#name').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#op-0-err').innerText(), '');
  assert.deepEqual(browser.takeHttpErrors(), ['422 /v1/pipelines']);
  await browser.shoot('create-422');

  await page.getByLabel('Name', { exact: true }).fill('clicks');
  // No periodic checkpoint may race the manual one below (that would be a 409).
  await page.getByLabel('Checkpoint interval').fill('1h');
  await page.locator('#op-2').fill('{"name": "sessions", "kind": "session", "gap": "30m"}');
  await page.getByRole('button', { name: 'Create pipeline' }).click();
  await page.waitForURL(/#\/p\/clicks$/);
  await page.getByRole('heading', { name: 'Operators' }).waitFor();
  const spec = await server.api('GET', '/v1/pipelines/clicks');
  assert.deepEqual(spec.operators.map((o) => o.name), ['page_views', 'last_pages', 'sessions']);
  assert.equal(spec.checkpoint_interval, '1h');
  assertClean(browser, assert);
});

test('events posted from the page are counted', async () => {
  const events = [
    { user_id: 'u1', page: '/home', ts: T0 + 1000 },
    { user_id: 'u2', page: '/home', ts: T0 + 2000 },
    { user_id: 'u1', page: '/cart', ts: T0 + 3000 },
    { user_id: 'u3', page: '/home', ts: T0 + 61_000 },
  ];
  await page.locator('#events-body').fill(events.map((e) => JSON.stringify(e)).join('\n'));
  await page.getByRole('button', { name: 'Post events' }).click();
  await page.getByText('Accepted 4 events (offsets 1–4).').waitFor();
  // The status poll shows them: the Events counter reads 4.
  await page.locator('.stat', { hasText: 'Events' }).first().filter({ hasText: /^Events\s*4$/ }).waitFor();
  // One JSON array too (not NDJSON), a second batch.
  await page.locator('#events-body').fill(JSON.stringify([{ user_id: 'u2', page: '/cart', ts: T0 + 62_000 }]));
  await page.getByRole('button', { name: 'Post events' }).click();
  await page.getByText('Accepted 1 events (offsets 5–5).').waitFor();
  await page.locator('.stat').first().filter({ hasText: /^Events\s*5$/ }).waitFor();
  // A bad event: the 400 and the event it names, where the action was.
  await page.locator('#events-body').fill('{"page": "/x", "ts": 1}');
  await page.getByRole('button', { name: 'Post events' }).click();
  await page.locator('#events-answer .problem', { hasText: '400' }).waitFor();
  assert.match(await page.locator('#events-answer').innerText(), /event 0/);
  assert.deepEqual(browser.takeHttpErrors(), ['400 /v1/pipelines/clicks/events']);
  const keys = await page.locator('table.data tbody tr', { hasText: 'last_pages' }).innerText();
  assert.match(keys, /3$/);
  await browser.shoot('pipeline');
  assertClean(browser, assert);
});

test('the state browser answers a key and a prefix', async () => {
  await page.getByRole('link', { name: 'State' }).click();
  await page.getByLabel('Operator').selectOption('last_pages');
  await page.getByLabel('Key', { exact: true }).fill('u1');
  await page.getByRole('button', { name: 'Get key' }).click();
  await page.locator('#state-answer pre').waitFor();
  assert.deepEqual(JSON.parse(await page.locator('#state-answer pre').innerText()), { values: ['/cart', '/home'] });
  await page.getByLabel('Key', { exact: true }).fill('nobody');
  await page.getByRole('button', { name: 'Get key' }).click();
  await page.locator('#state-answer .problem', { hasText: '404' }).waitFor();
  assert.deepEqual(browser.takeHttpErrors(), ['404 /v1/pipelines/clicks/operators/last_pages/state']);
  await page.getByLabel('Key prefix').fill('u');
  await page.getByRole('button', { name: 'List keys' }).click();
  await page.getByText('Page 1: 3 keys with prefix “u”.').waitFor();
  await browser.shoot('state');
  assertClean(browser, assert);
});

test('an output record arrives live, and pause holds the feed', async () => {
  await page.getByRole('link', { name: 'Output' }).click();
  await page.locator('#output-state', { hasText: 'live' }).waitFor();
  // Closing the first minute emits window_closed for /home and /cart.
  await server.api('POST', '/v1/pipelines/clicks/watermark', { time: T0 + 60_000 });
  await page.locator('#output-rows tr', { hasText: 'window_closed' }).first().waitFor();
  assert.equal(await page.locator('#output-rows tr').count(), 2);
  await page.getByRole('button', { name: 'Pause' }).click();
  await page.locator('#output-state', { hasText: 'paused' }).waitFor();
  await server.api('POST', '/v1/pipelines/clicks/watermark', { time: T0 + 120_000 });
  // Paused: the server has the new records, the page does not show them until resume, and
  // then shows each exactly once.
  const { records } = await server.api('GET', '/v1/pipelines/clicks/output?after=2&wait=5s');
  assert.ok(records.length >= 1);
  assert.equal(await page.locator('#output-rows tr').count(), 2);
  await page.getByRole('button', { name: 'Resume' }).click();
  await page.locator('#output-rows tr').nth(3).waitFor();
  assert.equal(await page.locator('#output-rows tr').count(), 4);
  const offsets = await page.locator('#output-rows tr td:first-child').allInnerTexts();
  assert.deepEqual(offsets, ['4', '3', '2', '1']);
  await browser.shoot('output');
  assertClean(browser, assert);
});

test('the window chart draws counts per window for a key', async () => {
  await page.getByRole('link', { name: 'Windows' }).click();
  await page.getByLabel('Key').fill('/home');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.locator('#chart-windows canvas').waitFor();
  await page.locator('#chart-windows + .scroll tbody tr').nth(1).waitFor();
  const values = await page.locator('#chart-windows + .scroll tbody tr td:last-child').allInnerTexts();
  assert.deepEqual(values, ['1', '2']);
  // Bars are drawn: the canvas holds pixels of the bar colour.
  const barPixels = await page.locator('#chart-windows canvas').evaluate((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 160 && d[i + 3] > 0) n++;
    return n;
  });
  assert.ok(barPixels > 100, `only ${barPixels} bar pixels`);
  await browser.shoot('windows');
  assertClean(browser, assert);
});

test('a checkpoint is triggered, listed and restored', async () => {
  await page.getByRole('link', { name: 'Checkpoints' }).click();
  // By keyboard alone: Tab reaches the button, Enter takes the checkpoint.
  await page.getByRole('button', { name: 'Take checkpoint' }).waitFor();
  await page.locator('body').focus();
  let focused = '';
  for (let i = 0; i < 40 && focused !== 'Take checkpoint'; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.textContent ?? '');
  }
  assert.equal(focused, 'Take checkpoint');
  await page.keyboard.press('Enter');
  await page.locator('#checkpoint-answer', { hasText: 'completed' }).waitFor();
  const row = page.locator('#checkpoint-rows tr', { hasText: 'manual' }).first();
  await row.waitFor();
  const id = (await row.locator('td').first().innerText()).trim();
  // An event after the checkpoint, which the restore discards.
  await server.api('POST', '/v1/pipelines/clicks/events', { user_id: 'u9', page: '/late', ts: T0 + 200_000 });
  await browser.shoot('checkpoints');
  await row.getByRole('button', { name: `Restore checkpoint ${id}` }).click();
  await page.getByRole('dialog').getByText(`Restore checkpoint #${id}?`).waitFor();
  // Escape cancels, as the dialog's Cancel does.
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  assert.equal((await server.api('GET', '/v1/pipelines/clicks')).status.events, 6);
  await row.getByRole('button', { name: `Restore checkpoint ${id}` }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Restore' }).click();
  await page.getByText(`Restored checkpoint #${id}; 1 events discarded.`).waitFor();
  assert.equal((await server.api('GET', '/v1/pipelines/clicks')).status.events, 5);
  assertClean(browser, assert);
});

test('the cluster view shows this instance leading and owning every partition', async () => {
  const view = await server.api('GET', '/v1/cluster');
  await go('#/cluster');
  await page.getByText(`This instance: ${view.node}`).waitFor();
  await page.locator('tbody tr', { hasText: 'alive' }).waitFor();
  const row = page.locator('tbody tr', { hasText: 'clicks' });
  await row.first().waitFor();
  assert.equal(await row.count(), view.pipelines.find((p) => p.name === 'clicks').partitions.length);
  await row.first().getByText('0–255').waitFor();
  await browser.shoot('cluster');
  assertClean(browser, assert);
});

test('the pipelines view lists the pipeline; delete asks first', async () => {
  await go('#/');
  await page.getByRole('link', { name: 'clicks' }).waitFor();
  await page.locator('tbody tr', { hasText: 'running' }).waitFor();
  // A rate needs two polls.
  await page.locator('tbody tr td', { hasText: 'events/s' }).waitFor();
  await browser.shoot('pipelines');
  await page.getByRole('link', { name: 'clicks' }).click();
  await page.getByRole('button', { name: 'Delete pipeline' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  await server.api('GET', '/v1/pipelines/clicks');
  await page.getByRole('button', { name: 'Delete pipeline' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
  await page.waitForURL(/#\/$/);
  await page.getByText('No pipeline yet.').waitFor();
  assertClean(browser, assert);
});

test('no request went to another host', () => {
  const foreign = browser.requests.filter((u) => !u.startsWith(server.base) && !u.startsWith('data:'));
  assert.deepEqual(foreign, []);
  assertClean(browser, assert);
});
