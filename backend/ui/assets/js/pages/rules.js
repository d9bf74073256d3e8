// Rules: the staged rollouts of rule bundles and the bundles pushed
// (`rollouts.js`, refreshed while a rollout is open), then the rules seen
// in alerts: what the alerts themselves say about the rules that matched,
// from the newest alerts.

import { h, replace, card, empty, select } from '../dom.js';
import { get, qs } from '../api.js';
import { ago, time, num, levelBadge, techniqueLink, LEVELS } from '../format.js';
import { ruleAuthor } from './alert.js';
import { bundleSections } from './rollouts.js';

const SAMPLES = [[1000, 'newest 1,000 alerts'], [5000, 'newest 5,000 alerts'], [20000, 'newest 20,000 alerts']];

export function render({ query, setQuery, user }) {
  // The sections share the hash query (`n`, `rollout`, `bundle`).
  const q = { ...query };
  const update = (patch) => setQuery(Object.assign(q, patch));
  let n = Number(query.n) || 1000;
  const body = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  const sel = select(SAMPLES, n, { dataset: { testid: 'rules-sample' } });
  sel.addEventListener('change', () => { n = Number(sel.value); update({ n: n === 1000 ? '' : n }); load(); });
  const bundles = bundleSections({ user, query, update });
  let seq = 0;

  async function load() {
    const my = ++seq;
    const rules = new Map();
    let seen = 0;
    let cursor = '';
    try {
      while (seen < n) {
        const r = await get(`/alerts${qs({ cursor, limit: 500 })}`);
        if (my !== seq) return;
        for (const a of r.alerts) {
          let x = rules.get(a.rule_id);
          if (!x) {
            x = { id: a.rule_id, title: a.rule_title, author: ruleAuthor(a), count: 0, last: a.timestamp_ms, level: a.level, techniques: new Set(), devices: new Set() };
            rules.set(a.rule_id, x);
          }
          x.count += 1;
          x.last = Math.max(x.last, a.timestamp_ms);
          if (LEVELS.indexOf(a.level) > LEVELS.indexOf(x.level)) x.level = a.level;
          for (const t of a.techniques || []) x.techniques.add(t);
          x.devices.add(a.device_id);
          if (!x.author) x.author = ruleAuthor(a);
        }
        seen += r.alerts.length;
        if (!r.next) break;
        cursor = r.next;
      }
    } catch (e) {
      replace(body, h('div', { class: 'error-box' }, e.message));
      return;
    }
    const list = [...rules.values()].sort((a, b) => b.count - a.count);
    replace(body, card(`${num(list.length)} rules in the ${num(seen)} newest alerts`, list.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'rules-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Rule'), h('th', {}, 'Author'), h('th', {}, 'Level'), h('th', { class: 'num' }, 'Alerts'),
        h('th', { class: 'num' }, 'Devices'), h('th', {}, 'ATT&CK'), h('th', {}, 'Last match'))),
      h('tbody', {}, list.map((r) => h('tr', {},
        h('td', {}, h('a', { href: `#/alerts?rule=${encodeURIComponent(r.id)}`, class: 'strong' }, r.title || r.id), h('div', { class: 'mono muted small' }, r.id)),
        h('td', {}, r.author || h('span', { class: 'muted' }, 'not given')),
        h('td', {}, levelBadge(r.level)),
        h('td', { class: 'num' }, num(r.count)),
        h('td', { class: 'num' }, num(r.devices.size)),
        h('td', { class: 'chips' }, [...r.techniques].sort().slice(0, 4).map((t) => techniqueLink(t))),
        h('td', { title: time(r.last) }, ago(r.last)))))))
      : empty('No alert yet.')));
    body.dataset.loaded = '1';
  }
  load();
  return {
    el: h('div', { class: 'page rules-page' },
      h('div', { class: 'page-head' }, h('h1', {}, 'Rules')),
      bundles.rollouts,
      bundles.form,
      bundles.bundles,
      h('div', { class: 'section-head' }, h('h2', { class: 'section-title' }, 'Rules seen in alerts'), sel),
      h('p', { class: 'notice' }, 'The rules that matched, as the alerts report them: title, id, author (SigmaHQ rules are DRL 1.1 and credit their authors) and techniques.'),
      body),
    title: 'Rules',
    dispose: bundles.dispose,
  };
}
