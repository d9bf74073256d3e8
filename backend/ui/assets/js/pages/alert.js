// One alert: the matched event, process ancestry, the rule and its author
// (SigmaHQ rules are DRL 1.1: the author is credited wherever a match is
// shown), ATT&CK links, and the triage workflow with its history.

import { h, replace, button, card, toast, empty } from '../dom.js';
import { get, patch, post, can, deviceMap, hostname } from '../api.js';
import { time, ago, levelBadge, statusBadge, techniqueLink } from '../format.js';

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [
    h('dt', {}, k), h('dd', {}, v instanceof Node ? v : String(v)),
  ]));
}

const mono = (text, testid) => h('code', { class: 'mono wrap', dataset: testid ? { testid } : {} }, text);

/** The rule author as the alert carries it (lifted by the API, or in the
 * event or its extra fields under any of the names appliances use). */
export function ruleAuthor(a) {
  if (a.rule_author) return a.rule_author;
  const ev = a.event || {};
  const bags = [ev, ev.extra || {}, ev.fields || {}];
  for (const bag of bags) {
    for (const k of Object.keys(bag)) {
      if (['rule_author', 'ruleauthor', 'author'].includes(k.toLowerCase()) && typeof bag[k] === 'string') return bag[k];
    }
  }
  return null;
}

function ancestry(a) {
  const ev = a.event || {};
  const steps = [];
  if (ev.parent_image || ev.parent_command_line || ev.ppid) {
    steps.push(h('li', { class: 'proc parent' },
      h('div', { class: 'proc-head' }, h('span', { class: 'proc-label' }, 'parent'), ev.ppid !== undefined ? h('span', { class: 'muted' }, `pid ${ev.ppid}`) : null),
      ev.parent_image ? mono(ev.parent_image, 'parent-image') : h('span', { class: 'muted' }, 'image unknown'),
      ev.parent_command_line ? mono(ev.parent_command_line, 'parent-command-line') : null));
  }
  steps.push(h('li', { class: 'proc self' },
    h('div', { class: 'proc-head' }, h('span', { class: 'proc-label' }, 'process'),
      ev.pid !== undefined ? h('span', { class: 'muted' }, `pid ${ev.pid}`) : null,
      ev.user ? h('span', { class: 'muted' }, `user ${ev.user}`) : (ev.uid !== undefined ? h('span', { class: 'muted' }, `uid ${ev.uid}`) : null)),
    a.image ? mono(a.image, 'image') : null,
    a.command_line ? mono(a.command_line, 'command-line') : null,
    ev.cwd ? h('div', { class: 'muted small' }, 'cwd ', mono(ev.cwd)) : null));
  if (ev.type === 'file') {
    steps.push(h('li', { class: 'proc target' }, h('div', { class: 'proc-head' }, h('span', { class: 'proc-label' }, ev.action || 'file')),
      mono(ev.path || a.path || '', 'path'), ev.target_path ? h('div', {}, '→ ', mono(ev.target_path)) : null));
  } else if (ev.type === 'network') {
    steps.push(h('li', { class: 'proc target' }, h('div', { class: 'proc-head' }, h('span', { class: 'proc-label' }, `${ev.direction || ''} ${ev.transport || ''}`)),
      mono(`${ev.src_ip}:${ev.src_port} → ${ev.dst_ip}:${ev.dst_port}${ev.dst_host ? ` (${ev.dst_host})` : ''}`)));
  } else if (a.path) {
    steps.push(h('li', { class: 'proc target' }, h('div', { class: 'proc-head' }, h('span', { class: 'proc-label' }, 'path')), mono(a.path, 'path')));
  }
  return h('ol', { class: 'ancestry' }, steps);
}

export function render({ id, user }) {
  const el = h('div', { class: 'page alert-page' }, h('div', { class: 'loading' }, 'Loading…'));
  let alert = null;
  // Workflow changes: from the audit log for admins, else those made in
  // this page view.
  const changes = [];
  const triage = can(user, 'analyst');

  let ruleText = null;

  async function load() {
    try {
      const [a, audit] = await Promise.all([
        get(`/alerts/${encodeURIComponent(id)}`),
        // Workflow history lives in the audit log, which only admins read.
        can(user, 'admin') ? get('/audit?action=alert.update&limit=1000').catch(() => null) : null,
        deviceMap().catch(() => null),
      ]);
      alert = a;
      // the rule's Sigma text, when the backend has it (bundles, built-ins)
      ruleText = a.rule_id ? await get(`/rules/${encodeURIComponent(a.rule_id)}`).catch(() => null) : null;
      for (const e of (audit?.entries || []).filter((x) => x.target === id)) {
        const d = e.detail || {};
        const parts = [];
        if (d.status) parts.push(`status → ${d.status}`);
        if (d.assignee !== undefined) parts.push(d.assignee === null ? 'unassigned' : `assigned to ${d.assignee}`);
        changes.push({ at_ms: e.at_ms, actor: e.actor, text: parts.join(', ') || 'changed' });
      }
      draw();
    } catch (e) {
      replace(el, h('div', { class: 'error-box' }, e.status === 404 ? 'No such alert.' : e.message));
    }
  }

  async function change(body, what) {
    const updated = await patch(`/alerts/${encodeURIComponent(id)}`, body);
    alert = { ...alert, ...updated };
    changes.unshift({ at_ms: Date.now(), actor: user.name, text: what });
    toast(what);
    draw();
  }


  function workflow(a) {
    if (!triage) return null;
    const acts = [];
    if (a.status === 'new') acts.push(button('Acknowledge', () => change({ status: 'acknowledged' }, 'Acknowledged'), { class: 'btn primary', dataset: { testid: 'ack' } }));
    if (a.status !== 'resolved') acts.push(button('Resolve', () => change({ status: 'resolved' }, 'Resolved'), { class: 'btn', dataset: { testid: 'resolve' } }));
    else acts.push(button('Reopen', () => change({ status: 'new' }, 'Reopened'), { class: 'btn', dataset: { testid: 'reopen' } }));
    if (a.assignee !== user.name) acts.push(button('Assign to me', () => change({ assignee: user.name }, `Assigned to ${user.name}`), { class: 'btn', dataset: { testid: 'assign-me' } }));
    if (a.assignee) acts.push(button('Unassign', () => change({ assignee: null }, 'Unassigned'), { class: 'btn ghost', dataset: { testid: 'unassign' } }));
    const who = h('input', { placeholder: 'user name', class: 'narrow', dataset: { testid: 'assignee-input' } });
    const assign = button('Assign', async () => {
      const name = who.value.trim();
      if (!name) return;
      await change({ assignee: name }, `Assigned to ${name}`);
    }, { class: 'btn' });
    return h('div', { class: 'workflow', dataset: { testid: 'workflow' } }, acts, h('span', { class: 'assign' }, who, assign));
  }

  function notes(a) {
    const list = h('ul', { class: 'notes', dataset: { testid: 'notes' } },
      [...(a.notes || []).map((n) => ({ ...n, note: true })), ...changes.map((x) => ({ ...x, author: x.actor }))]
        .sort((x, y) => y.at_ms - x.at_ms)
        .map((n) => h('li', { class: n.note ? 'note' : 'event' },
          h('div', { class: 'note-head' }, h('strong', {}, n.author), ' ', h('span', { class: 'muted', title: time(n.at_ms) }, ago(n.at_ms)), n.note ? null : h('span', { class: 'muted' }, ' · workflow')),
          h('div', { class: 'note-text' }, n.text))));
    if (!list.firstChild) list.appendChild(h('li', { class: 'muted' }, 'No notes yet.'));
    let form = null;
    if (triage) {
      const text = h('textarea', { rows: 3, maxlength: 4096, placeholder: 'Add a note…', dataset: { testid: 'note-text' } });
      form = h('form', { class: 'note-form' }, text,
        button('Add note', async () => {
          if (!text.value.trim()) return;
          const n = await post(`/alerts/${encodeURIComponent(id)}/notes`, { text: text.value });
          alert.notes = [...(alert.notes || []), n];
          draw();
        }, { class: 'btn', dataset: { testid: 'add-note' } }));
    }
    return h('div', {}, list, form,
      h('p', { class: 'muted small' }, `Last workflow change ${ago(a.updated_ms)} (${time(a.updated_ms)}).`,
        can(user, 'admin') ? [' Every change is in the ', h('a', { href: '#/admin/audit' }, 'audit log'), '.'] : null));
  }

  function draw() {
    const a = alert;
    const author = ruleAuthor(a);
    const host = hostname(a.device_id);
    const ev = a.event || {};
    replace(el,
      h('div', { class: 'crumbs' }, h('a', { href: '#/alerts' }, 'Alerts'), ' / ', h('span', { class: 'mono' }, a.id)),
      h('div', { class: 'page-head alert-head' },
        h('div', {},
          h('h1', { dataset: { testid: 'alert-title' } }, a.rule_title || a.rule_id),
          h('div', { class: 'head-meta' }, levelBadge(a.level), statusBadge(a.status),
            a.assignee ? h('span', { class: 'chip' }, `assigned to ${a.assignee}`) : h('span', { class: 'muted' }, 'unassigned'),
            h('span', { class: 'muted' }, time(a.timestamp_ms)))),
        workflow(a)),
      h('div', { class: 'grid-2' },
        h('div', { class: 'col' },
          card('Matched event', ancestry(a), { class: 'event-card' }),
          card('Event fields', h('pre', { class: 'json', dataset: { testid: 'event-json' } }, JSON.stringify(ev, null, 2)))),
        h('div', { class: 'col' },
          card('Rule', kv([
            ['Title', a.rule_title],
            ['Rule id', mono(a.rule_id)],
            ['Author', h('span', { dataset: { testid: 'rule-author' } }, author || 'not given by the appliance')],
            ['Source', a.source],
            ['', h('a', { href: `#/alerts?rule=${encodeURIComponent(a.rule_id)}` }, 'Other alerts of this rule')],
          ])),
          card('Rule text', ruleText
            ? h('div', {},
              h('p', { class: 'muted small' }, ruleText.source === 'bundle'
                ? `From rule bundle ${ruleText.version} (${ruleText.path}).`
                : `Built into picketd (${ruleText.path}).`),
              h('pre', { class: 'json', dataset: { testid: 'rule-text' } }, ruleText.text))
            : empty('Not known to the backend: the rule comes from the device\'s own rules directory.')),
          card('ATT&CK', (a.techniques || []).length
            ? h('div', { class: 'chips wrap' }, a.techniques.map((t) => techniqueLink(t, { withName: true })))
            : empty('No technique tagged.')),
          card('Device', kv([
            ['Host', h('a', { href: `#/devices/${a.device_id}` }, host || a.device_id)],
            ['Device id', mono(a.device_id)],
            ['Sequence', String(a.seq)],
            ['Event time', time(a.timestamp_ms)],
            ['Received', time(a.received_ms)],
          ])),
          card('Notes and history', notes(a)))));
  }

  load();
  return { el, title: 'Alert' };
}
