// Device inventory: search and filters over the whole list (the API returns
// every device), at most MAX_ROWS rows drawn at once.

import { h, replace, select, button, empty } from '../dom.js';
import { deviceMap } from '../api.js';
import { ago, time, num } from '../format.js';
import { subscribe } from '../live.js';

const MAX_ROWS = 500;
/** Beyond this long unseen a device counts as stale rather than offline. */
export const STALE_MS = 24 * 3600e3;

/** `online`, `offline` (seen within STALE_MS), `stale` or `revoked`. */
export function health(d, now = Date.now()) {
  if (d.revoked_ms) return 'revoked';
  if (d.online) return 'online';
  if (d.last_seen_ms && now - d.last_seen_ms <= STALE_MS) return 'offline';
  return 'stale';
}

export function healthBadge(d) {
  const s = health(d);
  return h('span', { class: `badge health-${s}` }, s);
}

/** The API's `platform` values, as the inventory names them. */
export const PLATFORMS = { linux: 'Linux', windows: 'Windows', macos: 'macOS' };

function moduleSummary(hb) {
  // An endpoint agent's only "module" names its platform: no sensor modules.
  const modules = (hb?.modules || []).filter((m) => m.name !== 'agent');
  if (!modules.length) return '';
  const bad = modules.filter((m) => m.state !== 'running' && m.state !== 'disabled');
  return bad.length ? `${bad.length} of ${modules.length} not running` : `${modules.length} running`;
}

export function render({ query, setQuery }) {
  const f = { q: query.q || '', health: query.health || '', platform: query.platform || '', version: query.version || '' };
  let all = [];
  const tbody = h('tbody');
  const info = h('span', { class: 'muted' });
  const qInput = h('input', { type: 'search', placeholder: 'Search host name or id…', value: f.q, class: 'grow', dataset: { testid: 'device-search' } });
  const healthSel = select([['', 'Any state'], 'online', 'offline', 'stale', 'revoked'], f.health, { dataset: { testid: 'device-health' } });
  const platformSel = select([['', 'Any platform'], ['linux', 'Linux appliances'], ['windows', 'Windows agents'], ['macos', 'macOS agents']], f.platform, { dataset: { testid: 'device-platform' } });
  const versionSel = select([['', 'Any version']], f.version);
  const counts = h('div', { class: 'health-strip' });

  tbody.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) return;
    const tr = ev.target.closest('tr[data-id]');
    if (tr) location.hash = `#/devices/${tr.dataset.id}`;
  });

  function draw() {
    const q = f.q.toLowerCase();
    const now = Date.now();
    const list = all.filter((d) => (!q || d.hostname.toLowerCase().includes(q) || d.id.includes(q))
      && (!f.health || health(d, now) === f.health)
      && (!f.platform || d.platform === f.platform)
      && (!f.version || d.heartbeat?.agent_version === f.version));
    const tally = { online: 0, offline: 0, stale: 0, revoked: 0 };
    for (const d of all) tally[health(d, now)] += 1;
    replace(counts, ...Object.entries(tally).map(([k, v]) => h('button', {
      type: 'button', class: ['health-pill', `health-${k}`, f.health === k ? 'active' : ''],
      onclick: () => { healthSel.value = f.health === k ? '' : k; read(); },
    }, h('strong', {}, num(v)), ` ${k}`)));
    replace(tbody, ...list.slice(0, MAX_ROWS).map((d) => {
      const hb = d.heartbeat;
      return h('tr', { dataset: { id: d.id } },
        h('td', {}, h('a', { href: `#/devices/${d.id}`, class: 'strong' }, d.hostname)),
        h('td', {}, healthBadge(d)),
        h('td', { dataset: { testid: 'device-platform-cell' } }, PLATFORMS[d.platform] || d.platform || ''),
        h('td', { class: 'mono' }, hb?.agent_version || ''),
        h('td', { class: 'num' }, hb?.rule_bundle_version ?? '—'),
        h('td', { title: time(d.last_seen_ms) }, ago(d.last_seen_ms, now)),
        h('td', { class: ['num', hb?.spool_depth > 1000 ? 'warn' : ''] }, hb ? num(hb.spool_depth) : '—'),
        h('td', { class: ['num', hb?.spool_evictions_total ? 'warn' : ''] }, hb ? num(hb.spool_evictions_total) : '—'),
        h('td', { class: ['num', hb?.lost_kernel_records_total ? 'warn' : ''] }, hb ? num(hb.lost_kernel_records_total) : '—'),
        h('td', { class: 'muted' }, moduleSummary(hb)),
        h('td', { class: 'mono muted small' }, d.id));
    }));
    if (list.length === 0) tbody.appendChild(h('tr', {}, h('td', { colspan: 11 }, empty(all.length ? 'No device matches.' : 'No device enrolled yet: create an enrollment token under Admin.'))));
    info.textContent = list.length > MAX_ROWS
      ? `Showing ${num(MAX_ROWS)} of ${num(list.length)} matching devices: refine the search.`
      : `${num(list.length)} of ${num(all.length)} devices`;
  }

  function read() {
    f.q = qInput.value.trim();
    f.health = healthSel.value;
    f.platform = platformSel.value;
    f.version = versionSel.value;
    setQuery(f);
    draw();
  }
  qInput.addEventListener('input', read);
  healthSel.addEventListener('change', read);
  platformSel.addEventListener('change', read);
  versionSel.addEventListener('change', read);

  async function load(fresh) {
    const m = await deviceMap({ fresh });
    all = [...m.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
    const versions = [...new Set(all.map((d) => d.heartbeat?.agent_version).filter(Boolean))].sort();
    replace(versionSel, ...[['', 'Any version'], ...versions.map((v) => [v, v])].map(([v, l]) => {
      const o = h('option', { value: v }, l);
      if (v === f.version) o.selected = true;
      return o;
    }));
    draw();
    el.dataset.loaded = '1';
  }

  // Device changes arrive live; redraw at most once a second.
  let dirty = false;
  const unsubscribe = subscribe((batch) => {
    if (batch.some((m) => m.type === 'device')) dirty = true;
  });
  const timer = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    load(false).catch(() => {});
  }, 1000);

  const el = h('div', { class: 'page devices-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Devices'),
      h('div', { class: 'page-actions' }, button('Reload', () => load(true), { class: 'btn' }))),
    counts,
    h('div', { class: 'filters' }, qInput, healthSel, platformSel, versionSel),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table devices-table', dataset: { testid: 'devices-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Host'), h('th', {}, 'State'), h('th', {}, 'Platform'), h('th', {}, 'Agent'),
        h('th', { class: 'num', title: 'Rule bundle version' }, 'Rules'), h('th', {}, 'Last seen'),
        h('th', { class: 'num', title: 'Alerts waiting in the device spool' }, 'Spool'),
        h('th', { class: 'num', title: 'Alerts evicted from the spool' }, 'Evicted'),
        h('th', { class: 'num', title: 'Kernel records lost' }, 'Lost'),
        h('th', {}, 'Modules'), h('th', {}, 'Id'))),
      tbody)),
    h('div', { class: 'pager' }, info));
  load(true).catch((e) => replace(tbody, h('tr', {}, h('td', { colspan: 11 }, h('div', { class: 'error-box' }, e.message)))));
  return { el, title: 'Devices', dispose: () => { unsubscribe(); clearInterval(timer); } };
}
