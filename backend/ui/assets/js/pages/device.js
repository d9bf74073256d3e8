// One device: versions, heartbeat figures, module states, recent alerts,
// and revocation for operators.

import { h, replace, button, card, toast, empty } from '../dom.js';
import { get, post, can, qs, noteDevice } from '../api.js';
import { time, ago, num, bytes, duration } from '../format.js';
import { healthBadge } from './devices.js';
import { alertRow, alertTable, clickableRows } from './alerts.js';

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v instanceof Node ? v : String(v ?? '—'))]));
}

export function render({ id, user }) {
  const el = h('div', { class: 'page device-page' }, h('div', { class: 'loading' }, 'Loading…'));

  async function load() {
    let d;
    try {
      d = await get(`/devices/${encodeURIComponent(id)}`);
    } catch (e) {
      replace(el, h('div', { class: 'error-box' }, e.status === 404 ? 'No such device.' : e.message));
      return;
    }
    noteDevice(d, d.online);
    const hb = d.heartbeat;
    const tbody = h('tbody');
    clickableRows(tbody);
    const actions = [];
    if (can(user, 'operator') && !d.revoked_ms) {
      actions.push(button('Revoke', async () => {
        if (!window.confirm(`Revoke ${d.hostname}? Its certificate and everything it sends will be refused from now on.`)) return;
        await post(`/devices/${encodeURIComponent(id)}/revoke`);
        toast(`${d.hostname} revoked`);
        load();
      }, { class: 'btn danger', dataset: { testid: 'revoke' } }));
    }
    replace(el,
      h('div', { class: 'crumbs' }, h('a', { href: '#/devices' }, 'Devices'), ' / ', d.hostname),
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, d.hostname), h('div', { class: 'head-meta' }, healthBadge(d), h('span', { class: 'mono muted' }, d.id))),
        h('div', { class: 'page-actions' }, actions, h('a', { class: 'btn', href: `#/alerts?device=${d.id}` }, 'All alerts of this device'))),
      h('div', { class: 'grid-3' },
        card('Versions', kv([
          ['Agent', hb?.agent_version ?? '—'],
          ['Rule bundle', hb?.rule_bundle_version ?? 'none'],
          ['Enrolled', time(d.enrolled_ms)],
          ['Certificate serial', h('span', { class: 'mono small' }, d.cert_serial)],
          ['Revoked', d.revoked_ms ? time(d.revoked_ms) : 'no'],
        ])),
        card('Heartbeat', hb ? kv([
          ['Last heartbeat', h('span', { title: time(hb.received_ms) }, ago(hb.received_ms))],
          ['Last seen', h('span', { title: time(d.last_seen_ms) }, ago(d.last_seen_ms))],
          ['Uptime', duration(hb.uptime_secs)],
          ['CPU', `${(hb.cpu_permille / 10).toFixed(1)} % of a core`],
          ['Memory', bytes(hb.rss_bytes)],
        ]) : empty('No heartbeat yet.')),
        card('Delivery', hb ? kv([
          ['Spool depth', `${num(hb.spool_depth)} alerts (${bytes(hb.spool_bytes)})`],
          ['Spool evictions', num(hb.spool_evictions_total)],
          ['Lost kernel records', num(hb.lost_kernel_records_total)],
          ['Last alert sequence', num(d.last_alert_seq)],
        ]) : empty('No heartbeat yet.'))),
      card('Modules', hb?.modules?.length ? h('table', { class: 'table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Module'), h('th', {}, 'State'), h('th', {}, 'Last error'))),
        h('tbody', {}, hb.modules.map((m) => h('tr', {}, h('td', { class: 'strong' }, m.name),
          h('td', {}, h('span', { class: `badge module-${m.state}` }, m.state)),
          h('td', { class: 'mono small' }, m.error || ''))))) : empty('The device reported no modules.')),
      card('Recent alerts', h('div', { class: 'table-wrap' }, alertTable(tbody))));
    try {
      const r = await get(`/alerts${qs({ device: id, limit: 20 })}`);
      replace(tbody, ...r.alerts.map(alertRow));
      if (!r.alerts.length) tbody.appendChild(h('tr', {}, h('td', { colspan: 8 }, empty('No alerts from this device.'))));
    } catch (e) {
      replace(tbody, h('tr', {}, h('td', { colspan: 8 }, e.message)));
    }
  }
  load();
  return { el, title: 'Device' };
}
