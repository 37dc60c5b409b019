// Test support: the real eddy binary on a free loopback port with a temp data dir (SQLite),
// and Debian's Chromium driven by playwright-core, with guards that fail a test on any console
// error, page error, or request to a host other than the server's.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '../..');
export const shots = join(root, 'target/ui-screenshots');
const bin = process.env.EDDY_BIN ?? join(root, 'target/debug/eddy');

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** A token and its tokens-file line. */
export function makeToken(name, scopes) {
  const token = randomBytes(24).toString('hex');
  const hash = createHash('sha256').update(token).digest('hex');
  return { token, line: `${name} sha256:${hash} ${scopes}` };
}

/** Starts eddy; `tokens` (lines of a tokens file) turns access control on. */
export async function startServer({ tokens } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'eddy-ui-'));
  const port = await freePort();
  const env = { ...process.env, EDDY_DATA_DIR: join(dir, 'data'), EDDY_LISTEN: `127.0.0.1:${port}`, EDDY_LOG: 'warn' };
  delete env.DATABASE_URL;
  if (tokens) {
    writeFileSync(join(dir, 'tokens'), `${tokens.join('\n')}\n`);
    env.EDDY_TOKENS_FILE = join(dir, 'tokens');
  }
  const child = spawn(bin, ['serve'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  const exited = new Promise((ok) => child.once('exit', ok));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`eddy exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch { /* not listening yet */ }
    if (i > 600) throw new Error('eddy did not become ready in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base,
    async api(method, path, body, token) {
      const headers = { 'Content-Type': 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return text ? JSON.parse(text) : null;
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Chromium with a fresh profile; `problems` collects what must fail the test. */
export async function openBrowser(base) {
  const profile = mkdtempSync(join(tmpdir(), 'eddy-ui-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const problems = [];
  const requests = [];
  const origin = new URL(base).origin;
  await context.route('**/*', (route) => {
    const url = route.request().url();
    requests.push(url);
    if (new URL(url).origin !== origin && !url.startsWith('data:')) {
      problems.push(`request to another host: ${url}`);
      return route.abort();
    }
    return route.continue();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // Chromium logs every non-2xx answer as a console error; those a test provokes on purpose
  // are taken with takeHttpErrors(), and any other is a problem.
  const httpErrors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const status = /^Failed to load resource: the server responded with a status of (\d+)/.exec(msg.text());
    if (status) httpErrors.push(`${status[1]} ${new URL(msg.location().url).pathname}`);
    else problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  mkdirSync(shots, { recursive: true });
  return {
    page,
    problems,
    requests,
    httpErrors,
    /** The error answers since the last call, as "<status> <path>". */
    takeHttpErrors() {
      return httpErrors.splice(0);
    },
    /** Screenshots of the current view at 1280×800 and 420×900. */
    async shoot(view) {
      for (const [width, height] of [[1280, 800], [420, 900]]) {
        await page.setViewportSize({ width, height });
        await settle(page);
        await page.screenshot({ path: join(shots, `${view}-${width}.png`), fullPage: true });
      }
      await page.setViewportSize({ width: 1280, height: 800 });
      await settle(page);
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Two animation frames: layout, resize observers and chart redraws have run. */
export function settle(page) {
  return page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** Fails with every collected problem, and with any error answer no test asked for. */
export function assertClean(browser, assert) {
  assert.deepStrictEqual(browser.problems, [], browser.problems.join('\n'));
  assert.deepStrictEqual(browser.takeHttpErrors(), [], 'unexpected error answers');
}
