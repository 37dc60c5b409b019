// The dashboard with a tokens file: it asks for a token (kept in session storage, never in a
// URL), shows 401 for an unknown one, hides what a read-only token may not do, shows a 403 as
// such, reads the live feed with the bearer header, and shows everything to an admin.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertClean, makeToken, openBrowser, startServer } from './harness.mjs';

const reader = makeToken('reader', 'read');
const admin = makeToken('boss', 'admin');
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
let server;
let browser;
let page;

const spec = {
  name: 'clicks',
  key: '/user_id',
  time: { field: '/ts', format: 'epoch_ms' },
  checkpoint_interval: '1h',
  operators: [{ name: 'page_views', kind: 'window', key: '/page', size: '1m', functions: ['count'] }],
};

before(async () => {
  server = await startServer({ tokens: [reader.line, admin.line] });
  await server.api('POST', '/v1/pipelines', spec, admin.token);
  await server.api('POST', '/v1/pipelines/clicks/events', [{ user_id: 'u1', page: '/home', ts: T0 }], admin.token);
  browser = await openBrowser(server.base);
  page = browser.page;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function signIn(token) {
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test('the page asks for a token, and says 401 for an unknown one', async () => {
  await page.goto(`${server.base}/ui/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.deepEqual(browser.takeHttpErrors(), ['401 /v1/token']);
  await browser.shoot('sign-in');
  await signIn('not-a-token');
  await page.locator('.problem', { hasText: '401' }).waitFor();
  assert.match(await page.locator('.problem').innerText(), /not known/);
  assert.deepEqual(browser.takeHttpErrors(), ['401 /v1/token']);
  assertClean(browser, assert);
});

test('a read-only token sees pipelines but no admin or ingest controls, and a 403 is shown', async () => {
  await signIn(reader.token);
  await page.getByRole('link', { name: 'clicks' }).waitFor();
  await page.getByText('reader (read)').waitFor();
  assert.equal(await page.getByRole('link', { name: 'New pipeline' }).count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('eddy.token')), reader.token);

  await page.getByRole('link', { name: 'clicks' }).click();
  await page.getByRole('heading', { name: 'Operators' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Delete pipeline' }).isVisible(), false);
  assert.equal(await page.getByRole('button', { name: 'Post events' }).isVisible(), false);
  await page.getByRole('link', { name: 'Checkpoints' }).click();
  await page.getByText('No checkpoint yet.').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Take checkpoint' }).isVisible(), false);

  // The create page is hidden from the menu; reached by address, the server's 403 is shown.
  await page.goto(`${server.base}/ui/#/new`);
  await page.getByRole('button', { name: 'Create pipeline' }).click();
  await page.locator('.problem', { hasText: '403' }).waitFor();
  assert.match(await page.locator('.problem').innerText(), /lacks the admin scope/);
  assert.deepEqual(browser.takeHttpErrors(), ['403 /v1/pipelines']);
  assertClean(browser, assert);
});

test('the live feed is read with the bearer token', async () => {
  await page.goto(`${server.base}/ui/#/p/clicks/output`);
  await page.locator('#output-state', { hasText: 'live' }).waitFor();
  await server.api('POST', '/v1/pipelines/clicks/watermark', { time: T0 + 60_000 }, admin.token);
  await page.locator('#output-rows tr', { hasText: 'window_closed' }).waitFor();
  assertClean(browser, assert);
});

test('an admin token sees the admin controls; sign out forgets the token', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('eddy.token')), null);
  assert.deepEqual(browser.takeHttpErrors(), ['401 /v1/token']);
  await signIn(admin.token);
  await page.getByText('boss (ingest, read, admin)').waitFor();
  await page.goto(`${server.base}/ui/#/p/clicks/checkpoints`);
  await page.getByRole('button', { name: 'Take checkpoint' }).click();
  await page.locator('#checkpoint-rows tr', { hasText: 'manual' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Delete pipeline' }).isVisible(), true);
  assertClean(browser, assert);
});

test('no token ever went into a URL, and no request to another host', () => {
  for (const url of browser.requests) {
    assert.ok(!url.includes(reader.token) && !url.includes(admin.token), `token in ${url}`);
    assert.ok(url.startsWith(server.base), url);
  }
  assertClean(browser, assert);
});
