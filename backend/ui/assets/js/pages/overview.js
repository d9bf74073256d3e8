// Overview: alerts over time and by level (exact, from /alerts/counts),
// the ATT&CK heat map, top devices and rules (from a sample of the newest
// alerts in the range: the API has no aggregation by technique, device or
// rule yet), and fleet health.

import { h, replace, select, card, empty } from '../dom.js';
import { get, qs, deviceMap, hostname } from '../api.js';
import { LEVELS, num, techniqueUrl } from '../format.js';
import { TACTICS, techniqueName, parentTechnique, ATTACK_VERSION } from '../attack.js';
import { stackedBars, legend, hbars } from '../chart.js';
import { health } from './devices.js';

const RANGES = [['24h', 'Last 24 hours', 86400e3, '1h'], ['7d', 'Last 7 days', 7 * 86400e3, '6h'], ['30d', 'Last 30 days', 30 * 86400e3, '1d']];
const SAMPLE = 1000;
const BUCKET_MS = { '1h': 3600e3, '6h': 6 * 3600e3, '1d': 86400e3 };

async function sample(since) {
  const out = [];
  let cursor = '';
  while (out.length < SAMPLE) {
    const r = await get(`/alerts${qs({ since, cursor, limit: 500 })}`);
    out.push(...r.alerts);
    if (!r.next) break;
    cursor = r.next;
  }
  return out;
}

function top(map, n) {
  return [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n);
}

function heatClass(v, max) {
  if (!v) return 'heat-0';
  const r = v / max;
  if (r > 0.66) return 'heat-4';
  if (r > 0.33) return 'heat-3';
  if (r > 0.1) return 'heat-2';
  return 'heat-1';
}

/** Technique counts (sub-techniques roll up into their parent) by tactic. */
function heatMap(alerts, showAll) {
  const counts = new Map();
  for (const a of alerts) {
    for (const t of new Set((a.techniques || []).map(parentTechnique))) counts.set(t, (counts.get(t) || 0) + 1);
  }
  const max = Math.max(1, ...counts.values());
  const mapped = new Set(TACTICS.flatMap((t) => t.techniques));
  const unmapped = [...counts.keys()].filter((t) => !mapped.has(t)).sort();
  const columns = TACTICS.map((t) => ({ name: t.name, techniques: t.techniques }));
  if (unmapped.length) columns.push({ name: 'Other', techniques: unmapped });
  const grid = h('div', { class: 'heatmap', dataset: { testid: 'heatmap' } });
  for (const col of columns) {
    const cells = col.techniques
      .filter((t) => showAll || counts.get(t))
      .sort((a, b) => (counts.get(b) || 0) - (counts.get(a) || 0))
      .map((t) => {
        const v = counts.get(t) || 0;
        return h('a', {
          class: ['heat-cell', heatClass(v, max)],
          href: v ? `#/alerts?technique=${t}` : techniqueUrl(t),
          title: `${t} ${techniqueName(t) || ''}: ${num(v)} alerts`,
          ...(v ? {} : { target: '_blank', rel: 'noopener noreferrer' }),
        }, h('span', { class: 'heat-id' }, t), h('span', { class: 'heat-name' }, techniqueName(t) || ''), v ? h('span', { class: 'heat-count' }, num(v)) : null);
      });
    const total = col.techniques.reduce((a, t) => a + (counts.get(t) || 0), 0);
    grid.appendChild(h('div', { class: ['heat-col', total ? '' : 'heat-col-empty'] },
      h('div', { class: 'heat-head' }, h('span', {}, col.name), h('span', { class: 'muted' }, total ? num(total) : '')),
      cells.length ? cells : h('div', { class: 'heat-none' }, '—')));
  }
  return grid;
}

export function render({ query, setQuery }) {
  let range = RANGES.find((r) => r[0] === query.range) || RANGES[0];
  let showAll = query.matrix === 'all';
  const body = h('div', { class: 'overview' }, h('div', { class: 'loading' }, 'Loading…'));
  const rangeSel = select(RANGES.map((r) => [r[0], r[1]]), range[0], { dataset: { testid: 'overview-range' } });
  rangeSel.addEventListener('change', () => {
    range = RANGES.find((r) => r[0] === rangeSel.value);
    setQuery({ range: range[0], matrix: showAll ? 'all' : '' });
    load();
  });
  let seq = 0;

  async function load() {
    const my = ++seq;
    const now = Date.now();
    const since = now - range[2];
    const bucket = range[3];
    try {
      const [counts, untriaged, alerts, devices] = await Promise.all([
        get(`/alerts/counts${qs({ since, bucket })}`),
        get(`/alerts/counts${qs({ since, status: 'new', bucket: '31d' })}`),
        sample(since),
        deviceMap({ fresh: true }),
      ]);
      if (my !== seq) return;
      const byLevel = Object.fromEntries(LEVELS.map((l) => [l, 0]));
      for (const b of counts.buckets) byLevel[b.level] += b.count;
      const total = Object.values(byLevel).reduce((a, b) => a + b, 0);
      const newCount = untriaged.buckets.reduce((a, b) => a + b.count, 0);
      const fleet = { online: 0, offline: 0, stale: 0, revoked: 0 };
      for (const d of devices.values()) fleet[health(d, now)] += 1;
      const byDevice = new Map();
      const byRule = new Map();
      const ruleTitle = new Map();
      for (const a of alerts) {
        byDevice.set(a.device_id, (byDevice.get(a.device_id) || 0) + 1);
        byRule.set(a.rule_id, (byRule.get(a.rule_id) || 0) + 1);
        ruleTitle.set(a.rule_id, a.rule_title);
      }
      const sampleNote = alerts.length >= SAMPLE
        ? `From the newest ${num(alerts.length)} alerts of the range.`
        : `From all ${num(alerts.length)} alerts of the range.`;
      const kpi = (label, value, href, cls, testid) => h('a', { class: ['kpi', cls], href, dataset: { testid } },
        h('span', { class: 'kpi-value' }, num(value)), h('span', { class: 'kpi-label' }, label));
      const matrixToggle = h('label', { class: 'toggle' }, h('input', { type: 'checkbox', checked: showAll }), 'all techniques');
      matrixToggle.firstChild.addEventListener('change', (ev) => {
        showAll = ev.target.checked;
        setQuery({ range: range[0], matrix: showAll ? 'all' : '' });
        replace(heat, heatMap(alerts, showAll));
      });
      const heat = h('div', {}, heatMap(alerts, showAll));
      replace(body,
        h('div', { class: 'kpis' },
          kpi(`alerts, ${range[1].toLowerCase()}`, total, `#/alerts?range=${range[0]}`, '', 'kpi-total'),
          kpi('high or critical', byLevel.high + byLevel.critical, `#/alerts?range=${range[0]}&level=high`, 'kpi-high', 'kpi-high'),
          kpi('new, not triaged', newCount, `#/alerts?range=${range[0]}&status=new`, 'kpi-new', 'kpi-new'),
          kpi('devices online', fleet.online, '#/devices?health=online', 'kpi-online', 'kpi-online'),
          kpi('offline', fleet.offline, '#/devices?health=offline', 'kpi-offline', 'kpi-offline'),
          kpi('stale (> 24 h)', fleet.stale, '#/devices?health=stale', 'kpi-stale', 'kpi-stale')),
        h('div', { class: 'grid-wide' },
          card('Alerts over time', h('div', {}, stackedBars(counts.buckets, { bucketMs: BUCKET_MS[bucket], since, until: now }), legend()), { extra: h('span', { class: 'muted' }, `per ${bucket}`) }),
          card('By level', hbars([...LEVELS].reverse().map((l) => [l, byLevel[l], `#/alerts?range=${range[0]}&level=${l}`, `lv-${l}`])))),
        card('MITRE ATT&CK', h('div', {}, h('p', { class: 'muted small' }, `${sampleNote} Sub-techniques count toward their technique; ATT&CK Enterprise v${ATTACK_VERSION}.`), heat), { extra: matrixToggle }),
        h('div', { class: 'grid-3' },
          card('Top devices', byDevice.size
            ? hbars(top(byDevice, 8).map(([id, v]) => [hostname(id) || id.slice(0, 12), v, `#/alerts?device=${id}&range=${range[0]}`, 'bar-accent']))
            : empty('No alerts in this range.'), { extra: h('span', { class: 'muted small' }, 'sample') }),
          card('Top rules', byRule.size
            ? hbars(top(byRule, 8).map(([id, v]) => [ruleTitle.get(id) || id, v, `#/alerts?rule=${encodeURIComponent(id)}&range=${range[0]}`, 'bar-accent']))
            : empty('No alerts in this range.'), { extra: h('span', { class: 'muted small' }, 'sample') }),
          card('Fleet health', hbars([
            ['online', fleet.online, '#/devices?health=online', 'health-online'],
            ['offline', fleet.offline, '#/devices?health=offline', 'health-offline'],
            ['stale', fleet.stale, '#/devices?health=stale', 'health-stale'],
            ['revoked', fleet.revoked, '#/devices?health=revoked', 'health-revoked'],
          ]), { extra: h('span', { class: 'muted small' }, `${num(devices.size)} devices`) })));
      body.dataset.loaded = '1';
    } catch (e) {
      if (my === seq) replace(body, h('div', { class: 'error-box' }, e.message));
    }
  }
  const timer = setInterval(() => { if (!document.hidden) load(); }, 60000);
  load();
  return {
    el: h('div', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), h('div', { class: 'page-actions' }, rangeSel)), body),
    title: 'Overview',
    dispose: () => clearInterval(timer),
  };
}
