// One device: versions, heartbeat figures, rule bundles (its groups, the
// version it is told to run, what it acknowledged), module states, recent
// alerts, and revocation and group editing for operators.

import { h, replace, button, card, toast, empty } from '../dom.js';
import { get, post, put, can, qs, noteDevice } from '../api.js';
import { time, ago, num, bytes, duration, bundleStateBadge } from '../format.js';
import { healthBadge, PLATFORMS } from './devices.js';
import { alertRow, alertTable, clickableRows } from './alerts.js';

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v instanceof Node ? v : String(v ?? '—'))]));
}

/** Groups (editable by operators), the assigned bundle and the device's state per version. */
function bundlesCard(id, user) {
  const body = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  const path = `/devices/${encodeURIComponent(id)}`;
  async function load() {
    let r;
    try {
      r = await get(`${path}/bundles`);
    } catch (e) {
      replace(body, h('div', { class: 'error-box' }, e.message));
      return;
    }
    const chips = r.groups.length
      ? r.groups.map((g) => h('span', { class: 'chip' }, g))
      : h('span', { class: 'muted' }, 'none');
    let edit = null;
    if (can(user, 'operator')) {
      const input = h('input', {
        value: r.groups.join(', '), placeholder: 'lab, site-berlin', class: 'grow', 'aria-label': 'groups', dataset: { testid: 'groups-input' },
      });
      edit = h('form', { class: 'inline-form groups-form', onsubmit: (e) => e.preventDefault() }, input,
        button('Save groups', async () => {
          const groups = input.value.split(/[\s,]+/).filter(Boolean);
          const saved = await put(`${path}/groups`, { groups });
          toast(saved.groups.length ? `Groups: ${saved.groups.join(', ')}` : 'No group any more');
          load();
        }, { class: 'btn', dataset: { testid: 'save-groups' } }));
    }
    const a = r.assignment;
    const states = [...r.states].sort((x, y) => y.version - x.version);
    replace(body,
      h('div', { class: 'grid-2' },
        h('dl', { class: 'kv' },
          h('dt', {}, 'Groups'), h('dd', { class: 'chips', dataset: { testid: 'device-groups' } }, chips),
          h('dt', {}, 'Told to run'), h('dd', { dataset: { testid: 'device-assignment' } }, a
            ? [h('a', { href: `#/rules?bundle=${a.version}`, class: 'strong' }, `bundle ${a.version}`), ' by ',
              h('a', { href: `#/rules?rollout=${a.rollout_id}` }, `rollout #${a.rollout_id}`),
              h('span', { class: 'muted', title: time(a.assigned_ms) }, ` ${ago(a.assigned_ms)}`),
              a.previous_version ? h('span', { class: 'muted' }, `; before: bundle ${a.previous_version}`) : null]
            : h('span', { class: 'muted' }, 'no bundle assigned'))),
        edit ? h('div', {}, h('div', { class: 'field-label' }, 'Edit groups (bundles target groups)'), edit) : h('div')),
      states.length ? h('table', { class: 'table', dataset: { testid: 'device-bundle-states' } },
        h('thead', {}, h('tr', {}, h('th', {}, 'Bundle'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Chunks'), h('th', {}, 'Error'), h('th', {}, 'Reported'))),
        h('tbody', {}, states.map((s) => h('tr', { dataset: { version: s.version, state: s.state } },
          h('td', {}, h('a', { href: `#/rules?bundle=${s.version}` }, `bundle ${s.version}`)),
          h('td', {}, bundleStateBadge(s.state)),
          h('td', { class: 'num' }, s.state === 'downloading' ? num(s.chunks_received) : ''),
          h('td', { class: 'mono small wrap error-text' }, s.error || ''),
          h('td', { class: 'nowrap', title: time(s.updated_ms) }, ago(s.updated_ms))))))
        : empty('The device has acknowledged no bundle.'));
  }
  load();
  return card('Rule bundles', body, { class: 'device-bundles' });
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
          ['Platform', PLATFORMS[d.platform] || d.platform || '—'],
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
      bundlesCard(id, user),
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
