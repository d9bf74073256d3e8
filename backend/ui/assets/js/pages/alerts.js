// Alerts: filters (kept in the URL hash), cursor pagination (100 per page,
// newest first), and the live feed. While the first page is shown and the
// feed is not paused, new alerts that match the filters are put on top and
// the table is trimmed back to PAGE rows, so the DOM stays bounded however
// fast alerts arrive; the live module hands over one batch per frame.

import { h, replace, select, button, empty } from '../dom.js';
import { get, qs, deviceMap, hostname } from '../api.js';
import {
  time, shortTime, levelBadge, statusBadge, LEVELS, STATUSES, alertSubject, techniqueLink,
  localInputToMs, msToLocalInput, num,
} from '../format.js';
import { subscribe } from '../live.js';

const PAGE = 100;
const RANGES = [['', 'All time'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'], ['custom', 'Custom…']];
const RANGE_MS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
const FILTER_KEYS = ['q', 'level', 'status', 'device', 'rule', 'technique', 'source', 'range', 'since', 'until', 'hunt'];

/** The API query for a filter state (relative ranges resolved now). */
export function apiFilter(f, now = Date.now()) {
  const out = {
    q: f.q, level: f.level, status: f.status, device: f.device, rule: f.rule,
    technique: f.technique, source: f.source, hunt: f.hunt,
  };
  if (RANGE_MS[f.range]) out.since = now - RANGE_MS[f.range];
  else if (f.range === 'custom') {
    out.since = f.since;
    out.until = f.until;
  }
  return out;
}

/** Whether a live alert passes the filters (mirrors the store's filter). */
export function matches(a, f) {
  // Hunting jobs' alerts are never on the live feed; the fleet's list
  // never shows them.
  if (f.hunt || a.event?.hunt_id !== undefined) return false;
  if (f.level && LEVELS.indexOf(a.level) < LEVELS.indexOf(f.level)) return false;
  if (f.status && a.status !== f.status) return false;
  if (f.device && a.device_id !== f.device) return false;
  if (f.rule && a.rule_id !== f.rule) return false;
  if (f.source && a.source !== f.source) return false;
  if (f.technique && !(a.techniques || []).some((t) => t === f.technique || t.startsWith(`${f.technique}.`))) return false;
  if (f.since && a.timestamp_ms < Number(f.since)) return false;
  if (f.until && a.timestamp_ms >= Number(f.until)) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    if (![a.command_line, a.image, a.path].some((v) => v && v.toLowerCase().includes(q))) return false;
  }
  return true;
}

export function alertRow(a) {
  const subject = alertSubject(a);
  const host = hostname(a.device_id);
  return h('tr', { dataset: { id: a.id }, class: `row-${a.status}` },
    h('td', { class: 'nowrap mono', title: time(a.timestamp_ms) }, shortTime(a.timestamp_ms)),
    h('td', {}, levelBadge(a.level)),
    h('td', {}, statusBadge(a.status)),
    h('td', { class: 'rule-cell' }, h('a', { href: `#/alerts/${a.id}`, class: 'rule-title' }, a.rule_title || a.rule_id)),
    h('td', { class: 'nowrap' }, a.event?.hunt_id !== undefined
      ? h('a', { href: `#/hunts/${a.event.hunt_id}`, class: 'device-link', title: a.event.file || '' }, `hunt ${a.event.hunt_id}`)
      : h('a', { href: `#/devices/${a.device_id}`, class: 'device-link', title: a.device_id }, host || a.device_id.slice(0, 12))),
    h('td', { class: 'subject mono', title: subject }, subject),
    h('td', { class: 'chips' }, (a.techniques || []).slice(0, 3).map((t) => techniqueLink(t))),
    h('td', { class: 'nowrap muted' }, a.assignee || ''));
}

export function alertTable(tbody) {
  return h('table', { class: 'table alerts-table', dataset: { testid: 'alerts-table' } },
    h('thead', {}, h('tr', {},
      h('th', { class: 'col-time' }, 'Time'), h('th', { class: 'col-level' }, 'Level'),
      h('th', { class: 'col-status' }, 'Status'), h('th', { class: 'col-rule' }, 'Rule'),
      h('th', { class: 'col-device' }, 'Device'), h('th', {}, 'Process / target'),
      h('th', { class: 'col-attack' }, 'ATT&CK'), h('th', { class: 'col-assignee' }, 'Assignee'))),
    tbody);
}

/** Row clicks open the alert (links inside keep their own target). */
export function clickableRows(tbody) {
  tbody.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) return;
    const tr = ev.target.closest('tr[data-id]');
    if (tr) location.hash = `#/alerts/${tr.dataset.id}`;
  });
}

export function render({ query, setQuery }) {
  const f = Object.fromEntries(FILTER_KEYS.map((k) => [k, query[k] || '']));
  let cursors = [''];
  let page = 0;
  let next = null;
  let paused = false;
  let pending = 0;
  let skipped = 0;
  let loadSeq = 0;
  let effective = apiFilter(f);

  const tbody = h('tbody');
  clickableRows(tbody);
  const info = h('span', { class: 'muted', dataset: { testid: 'alerts-info' } });
  const top = () => window.scrollTo(0, 0);
  const newer = button('‹ Newer', async () => { page -= 1; await load(); top(); }, { class: 'btn', dataset: { testid: 'newer' } });
  const older = button('Older ›', async () => { cursors[page + 1] = next; page += 1; await load(); top(); }, { class: 'btn', dataset: { testid: 'older' } });
  const banner = h('button', { type: 'button', class: 'banner hidden', dataset: { testid: 'new-banner' } });
  banner.addEventListener('click', () => { page = 0; cursors = ['']; load(); });
  const lagNote = h('div', { class: 'notice hidden' });
  const pauseBtn = h('button', { type: 'button', class: 'btn', 'aria-pressed': 'false', dataset: { testid: 'pause' } }, 'Pause live');
  pauseBtn.addEventListener('click', () => {
    paused = !paused;
    pauseBtn.textContent = paused ? 'Resume live' : 'Pause live';
    pauseBtn.setAttribute('aria-pressed', String(paused));
    if (!paused && pending > 0 && page === 0) load();
  });

  // --- filter bar ---
  const qInput = h('input', { type: 'search', placeholder: 'Search command line, image, path…', value: f.q, class: 'grow', dataset: { testid: 'filter-q' } });
  const levelSel = select([['', 'Any level'], ['low', '≥ low'], ['medium', '≥ medium'], ['high', '≥ high'], ['critical', 'critical']], f.level, { dataset: { testid: 'filter-level' } });
  const statusSel = select([['', 'Any status'], ...STATUSES.map((s) => [s, s])], f.status, { dataset: { testid: 'filter-status' } });
  const deviceSel = select([['', 'Any device'], ...(f.device ? [[f.device, f.device.slice(0, 12)]] : [])], f.device, { dataset: { testid: 'filter-device' }, class: 'device-select' });
  const ruleInput = h('input', { placeholder: 'Rule id', value: f.rule, class: 'narrow', dataset: { testid: 'filter-rule' } });
  const techInput = h('input', { placeholder: 'Technique (T1059)', value: f.technique, class: 'narrow', dataset: { testid: 'filter-technique' } });
  const rangeSel = select(RANGES, f.range, { dataset: { testid: 'filter-range' } });
  const sinceInput = h('input', { type: 'datetime-local', value: msToLocalInput(f.since), title: 'From (inclusive)' });
  const untilInput = h('input', { type: 'datetime-local', value: msToLocalInput(f.until), title: 'Until (exclusive)' });
  const custom = h('span', { class: ['custom-range', f.range === 'custom' ? '' : 'hidden'] }, sinceInput, '–', untilInput);

  deviceMap().then((m) => {
    const opts = [...m.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
    replace(deviceSel, ...[['', 'Any device'], ...opts.map((d) => [d.id, d.hostname])].map(([v, l]) => {
      const o = h('option', { value: v }, l);
      if (v === f.device) o.selected = true;
      return o;
    }));
  }).catch(() => {});

  function readFilters() {
    f.q = qInput.value.trim();
    f.level = levelSel.value;
    f.status = statusSel.value;
    f.device = deviceSel.value;
    f.rule = ruleInput.value.trim();
    f.technique = techInput.value.trim().toUpperCase();
    f.range = rangeSel.value;
    custom.classList.toggle('hidden', f.range !== 'custom');
    f.since = f.range === 'custom' ? localInputToMs(sinceInput.value) : '';
    f.until = f.range === 'custom' ? localInputToMs(untilInput.value) : '';
    // The hunting job (`?hunt=`) is kept; "All alerts" on its notice drops it.
    setQuery(f);
    cursors = [''];
    page = 0;
    load();
  }
  let debounce;
  const later = () => { clearTimeout(debounce); debounce = setTimeout(readFilters, 300); };
  qInput.addEventListener('input', later);
  ruleInput.addEventListener('input', later);
  techInput.addEventListener('input', later);
  for (const el of [levelSel, statusSel, deviceSel, rangeSel, sinceInput, untilInput]) el.addEventListener('change', readFilters);
  const clearBtn = button('Clear', async () => {
    qInput.value = ''; ruleInput.value = ''; techInput.value = '';
    levelSel.value = ''; statusSel.value = ''; deviceSel.value = ''; rangeSel.value = '';
    readFilters();
  }, { class: 'btn ghost' });

  async function load() {
    const seq = ++loadSeq;
    effective = apiFilter(f);
    info.textContent = 'Loading…';
    const t0 = performance.now();
    try {
      const r = await get(`/alerts${qs({ ...effective, cursor: cursors[page], limit: PAGE })}`);
      if (seq !== loadSeq) return;
      next = r.next;
      replace(tbody, ...r.alerts.map(alertRow));
      if (r.alerts.length === 0) tbody.appendChild(h('tr', {}, h('td', { colspan: 8 }, empty('No alerts match these filters.'))));
      pending = 0;
      banner.classList.add('hidden');
      const first = page * PAGE + 1;
      info.textContent = r.alerts.length
        ? `${num(first)}–${num(first + r.alerts.length - 1)} · ${Math.round(performance.now() - t0)} ms`
        : '';
      newer.disabled = page === 0;
      older.disabled = !next;
      el.dataset.loaded = String(seq);
    } catch (e) {
      if (seq !== loadSeq) return;
      replace(tbody, h('tr', {}, h('td', { colspan: 8 }, h('div', { class: 'error-box' }, e.message))));
      info.textContent = '';
    }
  }

  function onLive(batch) {
    const fresh = [];
    for (const m of batch) {
      if (m.type === 'alert') {
        if (matches(m, effective)) fresh.push(m);
      } else if (m.type === 'lagged') {
        skipped += m.skipped;
        lagNote.textContent = `The live feed skipped ${num(skipped)} events while this page was busy; reload the list to see everything.`;
        lagNote.classList.remove('hidden');
      }
    }
    if (fresh.length === 0) return;
    if (page !== 0 || paused) {
      pending += fresh.length;
      banner.textContent = `${num(pending)} new alert${pending === 1 ? '' : 's'} — show`;
      banner.classList.remove('hidden');
      return;
    }
    // Newest last in the batch; only the last PAGE can stay on the page.
    const keep = fresh.slice(-PAGE);
    const frag = document.createDocumentFragment();
    const flash = keep.length <= 20;
    for (let i = keep.length - 1; i >= 0; i -= 1) {
      const tr = alertRow(keep[i]);
      if (flash) tr.classList.add('flash');
      frag.appendChild(tr);
    }
    const placeholder = tbody.querySelector('tr:not([data-id])');
    if (placeholder) placeholder.remove();
    tbody.insertBefore(frag, tbody.firstChild);
    while (tbody.rows.length > PAGE) tbody.lastChild.remove();
    // The cursor of "Older" now points past rows that were trimmed; a
    // reload of page one realigns it.
  }
  const unsubscribe = subscribe(onLive);

  const el = h('div', { class: 'page alerts-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Alerts'),
      h('div', { class: 'page-actions' }, pauseBtn, button('Reload', () => load(), { class: 'btn' }))),
    h('div', { class: 'filters', dataset: { testid: 'filters' } }, qInput, levelSel, statusSel, deviceSel, ruleInput, techInput, rangeSel, custom, clearBtn),
    f.hunt ? h('div', { class: 'notice', dataset: { testid: 'hunt-notice' } },
      'Alerts of hunting job ', h('a', { href: `#/hunts/${encodeURIComponent(f.hunt)}` }, `#${f.hunt}`),
      ' (uploaded logs; not part of the fleet\'s alerts). ', h('a', { href: '#/alerts' }, 'All alerts')) : null,
    lagNote, banner,
    h('div', { class: 'table-wrap' }, alertTable(tbody)),
    h('div', { class: 'pager' }, info, h('span', { class: 'spacer' }), newer, older));
  load();
  return { el, title: 'Alerts', dispose: () => { unsubscribe(); clearTimeout(debounce); } };
}
