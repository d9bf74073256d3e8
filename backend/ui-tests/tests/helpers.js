// Shared set-up of the browser tests: the backend run.sh started, Debian's
// Chromium through playwright-core, and the seeder's publish mode (one
// connected simulated appliance that publishes an alert per request).

import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

export const URL = process.env.PICKET_UI_URL;
export const ADMIN_PASSWORD = process.env.PICKET_ADMIN_PASSWORD;
export const SCREENSHOTS = process.env.PICKET_SCREENSHOTS || 'screenshots';
export const SEEDED_ALERTS = Number(process.env.PICKET_SEEDED_ALERTS || 0);
if (!URL) throw new Error('run the tests through backend/ui-tests/run.sh (PICKET_UI_URL is unset)');

export async function launch() {
  // launch() gives every browser a fresh temporary profile (user data dir).
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A context with the screenshot viewport; collects page errors, dialogs and CSP reports. */
export async function context(browser) {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 }, baseURL: URL });
  ctx.problems = [];
  ctx.dialogs = [];
  ctx.on('page', (page) => watch(ctx, page));
  return ctx;
}

function watch(ctx, page) {
  page.on('pageerror', (e) => ctx.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[1349]/.test(m.text())) ctx.problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    ctx.dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
}

export async function signIn(page, name, password) {
  await page.goto('/#/login');
  await page.locator('[data-testid=login] input[name=name]').fill(name);
  await page.locator('[data-testid=login] input[name=password]').fill(password);
  await page.locator('[data-testid=login] button[type=submit]').click();
  await page.locator('[data-testid=user]').waitFor();
}

export async function shot(page, name, { fullPage = false } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  // Let fonts, charts and transitions settle.
  await page.waitForTimeout(300);
  await page.evaluate(() => document.querySelector('.toasts')?.remove());
  await page.screenshot({ path: `${SCREENSHOTS}/${name}.png`, fullPage });
}

/** An API call from the page's session (cookie + CSRF header, as the UI sends). */
export async function apiFromPage(page, method, path, body) {
  return page.evaluate(async ([m, p, b]) => {
    const r = await fetch(`/api/v1${p}`, {
      method: m,
      headers: { 'Content-Type': 'application/json', 'X-Picket-Csrf': '1' },
      body: b === undefined ? undefined : JSON.stringify(b),
    });
    return { status: r.status, body: await r.text() };
  }, [method, path, body]);
}

/** The seeder in publish mode: `publish({command_line, level, rule_title})` → {id, sent_ms}. */
export async function publisher() {
  const child = spawn(process.env.PICKET_SEED_BIN, ['publish', '--mqtt', process.env.PICKET_MQTT, '--state', process.env.PICKET_SEED_STATE], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  const buffered = [];
  lines.on('line', (l) => {
    const v = JSON.parse(l);
    const w = waiting.shift();
    if (w) w(v); else buffered.push(v);
  });
  const next = () => (buffered.length ? Promise.resolve(buffered.shift()) : new Promise((r) => waiting.push(r)));
  const ready = await next();
  if (!ready.ready) throw new Error(`publisher: ${JSON.stringify(ready)}`);
  return {
    device: ready.device,
    async publish(alert) {
      child.stdin.write(`${JSON.stringify(alert)}\n`);
      return next();
    },
    /** `n` random alerts at `perSec` a second → {burst, last_id, started_ms, acked_ms}. */
    async burst(n, perSec) {
      child.stdin.write(`${JSON.stringify({ burst: n, per_sec: perSec })}\n`);
      return next();
    },
    close() {
      child.stdin.end();
      child.kill();
    },
  };
}

/** The seeder pushes a signed bundle of three rules, the first titled `title`; → the stored bundle. */
export function pushBundle(version, title) {
  const out = execFileSync(process.env.PICKET_SEED_BIN, ['push-bundle', '--api', URL, '--user', 'admin',
    '--password', ADMIN_PASSWORD, '--state', process.env.PICKET_SEED_STATE, '--version', String(version), '--title', title]);
  return JSON.parse(out.toString());
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
