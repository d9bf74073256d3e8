// Rule bundles and their staged rollouts, for the rules page: the bundles
// pushed (rules, signers, expiry, devices per state) with one bundle's rules
// on selection; the rollouts, and the selected one (by default the open
// one) in detail: its stages, devices per state, the failure and alert-rate
// checks, why it is paused or aborted, its history and the devices that
// failed. Operators get pause/resume/promote/abort and a form to start a
// rollout. While a rollout is open the sections are fetched again every few
// seconds (not while the tab is hidden); dispose() stops that.

import { h, replace, button, card, empty, field, select, toast } from '../dom.js';
import { get, post, can, deviceMap, hostname } from '../api.js';
import {
  time, shortTime, ago, num, bytes, duration, percent, levelBadge, techniqueLink, LEVELS,
  BUNDLE_STATES, bundleStateBadge, rolloutStateBadge,
} from '../format.js';

/** How often the sections are fetched while a rollout is open, and otherwise. */
const POLL_OPEN_MS = 3000;
const POLL_IDLE_MS = 30000;
const OPEN = new Set(['running', 'paused']);

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.filter(Boolean).map(([k, v]) => [
    h('dt', {}, k), h('dd', {}, v instanceof Node || Array.isArray(v) ? v : String(v ?? '—')),
  ]));
}

const deviceLink = (id) => h('a', { href: `#/devices/${id}`, title: id }, hostname(id) || id.slice(0, 12));

/** `all`, `group lab`, `device 3f…` chips from a bundle's targets. */
function targets(list) {
  return (list || []).map((t) => {
    if (t === 'all') return h('span', { class: 'chip' }, 'all devices');
    if (t && t.group !== undefined) return h('span', { class: 'chip' }, `group ${t.group}`);
    if (t && t.device !== undefined) return h('a', { class: 'chip', href: `#/devices/${t.device}`, title: t.device }, `device ${hostname(t.device) || String(t.device).slice(0, 12)}`);
    return h('span', { class: 'chip' }, JSON.stringify(t));
  });
}

const signerChips = (signers) => (signers || []).map((k) => h('span', { class: 'chip', title: k }, k.slice(0, 12)));

function expiry(unix, now = Date.now()) {
  const ms = unix * 1000;
  if (ms <= now) return h('span', { class: 'badge bstate-failed', title: time(ms) }, 'expired');
  return h('span', { title: time(ms) }, `in ${duration(Math.round((ms - now) / 1000))}`);
}

/** Device counts per state as badges (`active 23`). */
function stateCounts(counts) {
  const present = BUNDLE_STATES.filter((s) => counts?.[s]);
  if (!present.length) return h('span', { class: 'muted' }, 'no device yet');
  return h('span', { class: 'state-counts' }, present.map((s) => bundleStateBadge(s, { dataset: { state: s, count: counts[s] } }, `${s} ${num(counts[s])}`)));
}

/** One bar over the assigned devices, a segment per state; the legend adds those not assigned yet. */
function stateBar(states, assigned, targeted) {
  const total = Math.max(1, assigned);
  const bar = h('div', { class: 'stackbar', dataset: { testid: 'rollout-bar' }, role: 'img', 'aria-label': 'assigned devices per state' });
  const items = [];
  for (const s of BUNDLE_STATES) {
    const v = states?.[s] || 0;
    if (!v) continue;
    const seg = h('span', { class: `seg seg-${s}`, title: `${s}: ${num(v)}` });
    seg.style.width = `${(100 * v) / total}%`;
    bar.appendChild(seg);
    items.push(h('span', { class: 'legend-item', dataset: { state: s, count: v } }, h('span', { class: `swatch seg-${s}` }), `${s} ${num(v)}`));
  }
  const rest = Math.max(0, targeted - assigned);
  if (rest) items.push(h('span', { class: 'legend-item muted', dataset: { state: 'unassigned', count: rest } }, `· ${num(rest)} targeted, not assigned yet`));
  return h('div', {}, bar, h('div', { class: 'legend' }, items));
}

function stageSteps(r, sizes) {
  const done = r.state === 'completed';
  return h('ol', { class: 'stages', dataset: { testid: 'rollout-stages' } }, r.spec.stages.map((pct, i) => {
    const cls = done || i < r.status.stage ? 'done' : i === r.status.stage ? 'current' : 'todo';
    return h('li', { class: ['stage', cls] },
      h('div', { class: 'stage-name' }, `Stage ${i + 1}`, cls === 'current' && OPEN.has(r.state) ? h('span', { class: 'muted' }, ' · now') : null),
      h('div', { class: 'stage-pct' }, `${pct} %`),
      h('div', { class: 'muted small' }, sizes?.[i] === undefined ? '' : `${num(sizes[i])} device${sizes[i] === 1 ? '' : 's'}`));
  }));
}

function failureCheck(p) {
  const spec = p.rollout.spec;
  const finished = (p.states?.active || 0) + (p.states?.failed || 0);
  const limit = `limit ${spec.max_failure_percent} % once ${num(spec.min_finished)} finished`;
  if (p.failure_percent === null || p.failure_percent === undefined) return `no device finished yet (${limit})`;
  const over = finished >= spec.min_finished && p.failure_percent > spec.max_failure_percent;
  return h('span', { class: over ? 'warn-text' : '' }, `${percent(p.failure_percent)} of ${num(finished)} finished devices failed (${limit})`);
}

function alertCheck(p) {
  const spec = p.rollout.spec;
  if (spec.max_alert_rate_ratio === null || spec.max_alert_rate_ratio === undefined) return 'off';
  const limit = `limit ${spec.max_alert_rate_ratio}× once ${num(spec.min_alerts)} alerts`;
  const a = p.alert_rate;
  if (!a) return `not measured yet: no device runs it (${limit})`;
  const rate = (x) => `${Number(x).toFixed(2)}/device-hour`;
  const ratio = a.ratio === null || a.ratio === undefined ? 'nothing to compare with' : `${Number(a.ratio).toFixed(2)}×`;
  const over = a.activated_alerts >= spec.min_alerts && a.ratio !== null && a.ratio > spec.max_alert_rate_ratio;
  return h('span', { class: over ? 'warn-text' : '' },
    `${num(a.activated_alerts)} alerts since activation, ${rate(a.activated_per_device_hour)} vs ${rate(a.others_per_device_hour)} on the devices not running it: ${ratio} (${limit})`);
}

function settings(spec) {
  const parts = [
    spec.auto_promote ? `next stage by itself once ${spec.promote_at_percent} % of a stage runs it` : `promoted by hand (healthy at ${spec.promote_at_percent} %)`,
    spec.bake_secs ? `after at least ${duration(spec.bake_secs)}` : null,
    `on a threshold: ${spec.on_threshold}`,
  ];
  return parts.filter(Boolean).join(', ');
}

function history(r) {
  const rows = [...(r.status.history || [])].reverse();
  return h('table', { class: 'table', dataset: { testid: 'rollout-history' } },
    h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Who'), h('th', {}, 'What'), h('th', {}, 'Detail'))),
    h('tbody', {}, rows.map((e) => h('tr', {},
      h('td', { class: 'nowrap mono', title: `${time(e.at_ms)} (${ago(e.at_ms)})` }, shortTime(e.at_ms)),
      h('td', { class: 'strong' }, e.actor),
      h('td', {}, h('span', { class: 'chip' }, e.action)),
      h('td', { class: 'wrap' }, e.detail || '')))));
}

function failures(p) {
  const failed = p.states?.failed || 0;
  if (!failed) return empty('No device failed.');
  return h('div', {},
    h('table', { class: 'table', dataset: { testid: 'rollout-failures' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Error'), h('th', {}, 'Reported'))),
      h('tbody', {}, p.failures.map((f) => h('tr', { dataset: { device: f.device_id } },
        h('td', { class: 'nowrap' }, deviceLink(f.device_id)),
        h('td', { class: 'mono small wrap error-text' }, f.error || 'no error given'),
        h('td', { class: 'nowrap', title: time(f.updated_ms) }, ago(f.updated_ms)))))),
    failed > p.failures.length ? h('p', { class: 'muted small' }, `The first ${num(p.failures.length)} of ${num(failed)} failed devices.`) : null);
}

/** The rules page's bundle and rollout sections; `update` merges into the page's query. */
export function bundleSections({ user, query, update }) {
  const operator = can(user, 'operator');
  let selRollout = Number(query.rollout) || null;
  let selBundle = Number(query.bundle) || null;
  let data = { bundles: [], rollouts: [], progress: null, bundle: null };
  let drawn = '';
  let seq = 0;
  let timer = null;
  let disposed = false;

  const rolloutsBody = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  const bundlesBody = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  const bundleBody = h('div', {});
  const form = operator ? startForm() : null;

  function selectedRollout(list) {
    if (selRollout && list.some((r) => r.id === selRollout)) return selRollout;
    return (list.find((r) => OPEN.has(r.state)) || list[0])?.id ?? null;
  }

  async function refresh() {
    const my = ++seq;
    clearTimeout(timer);
    try {
      const [bundles, rollouts] = await Promise.all([get('/bundles'), get('/rollouts'), deviceMap().catch(() => null)]);
      const id = selectedRollout(rollouts);
      const [progress, bundle] = await Promise.all([
        id ? get(`/rollouts/${id}`) : null,
        selBundle && bundles.some((b) => b.version === selBundle) ? get(`/bundles/${selBundle}`) : null,
      ]);
      if (my !== seq || disposed) return;
      data = { bundles, rollouts, progress, bundle };
      draw();
    } catch (e) {
      if (my !== seq || disposed) return;
      if (!drawn) {
        replace(rolloutsBody, h('div', { class: 'error-box' }, e.message));
        replace(bundlesBody, h('div', { class: 'error-box' }, e.message));
      } else {
        toast(`Refreshing the rollouts failed: ${e.message}`, 'error');
      }
    }
    if (disposed || my !== seq) return;
    const open = data.rollouts.some((r) => OPEN.has(r.state));
    timer = setTimeout(tick, open ? POLL_OPEN_MS : POLL_IDLE_MS);
  }

  function tick() {
    // A hidden tab does not poll; it looks again when shown.
    if (document.hidden) {
      timer = setTimeout(tick, POLL_OPEN_MS);
      return;
    }
    refresh();
  }

  function draw() {
    // Redraw only what changed: a poll that brings nothing new leaves the
    // DOM (and the reader's selection and hover) alone.
    const key = JSON.stringify([data, selRollout, selBundle]);
    if (key === drawn) return;
    drawn = key;
    drawRollouts();
    drawBundles();
    if (form) form.fill(data);
    rolloutsBody.dataset.loaded = '1';
    bundlesBody.dataset.loaded = '1';
  }

  async function act(r, action) {
    await post(`/rollouts/${r.id}/${action}`);
    toast(`Rollout of bundle ${r.version}: ${{ pause: 'paused', resume: 'resumed', promote: 'promoted', abort: 'aborted' }[action]}`);
    await refresh();
  }

  function actions(r) {
    if (!operator || !OPEN.has(r.state)) return null;
    const last = r.status.stage >= r.spec.stages.length - 1;
    return h('div', { class: 'workflow', dataset: { testid: 'rollout-actions' } },
      r.state === 'running' ? button('Pause', () => act(r, 'pause'), { class: 'btn', dataset: { testid: 'rollout-pause' } }) : null,
      r.state === 'paused' ? button('Resume', () => act(r, 'resume'), { class: 'btn primary', dataset: { testid: 'rollout-resume' } }) : null,
      last ? null : button(`Promote to stage ${r.status.stage + 2}`, () => act(r, 'promote'), {
        class: 'btn', dataset: { testid: 'rollout-promote' }, title: `Assign ${r.spec.stages[r.status.stage + 1]} % now, whatever the current stage looks like`,
      }),
      button('Abort', async () => {
        if (!window.confirm(`Abort the rollout of bundle ${r.version}? Devices that have not activated it are told to keep their previous bundle; devices that run it keep it.`)) return;
        await act(r, 'abort');
      }, { class: 'btn danger', dataset: { testid: 'rollout-abort' } }));
  }

  function drawRollouts() {
    const { rollouts, progress: p } = data;
    if (!rollouts.length) {
      replace(rolloutsBody, card('Rollouts', empty(operator
        ? 'No rollout yet. Push a signed bundle (POST /api/v1/bundles), then start its rollout below.'
        : 'No rollout yet.')));
      return;
    }
    const selected = p?.rollout.id;
    const tbody = h('tbody', {}, rollouts.map((r) => h('tr', {
      dataset: { id: r.id, state: r.state }, class: r.id === selected ? 'selected' : '',
    },
    h('td', { class: 'mono' }, `#${r.id}`),
    h('td', { class: 'strong' }, `bundle ${r.version}`),
    h('td', {}, rolloutStateBadge(r.state)),
    h('td', {}, `${Math.min(r.status.stage, r.spec.stages.length - 1) + 1} of ${r.spec.stages.length}`, h('span', { class: 'muted' }, ` (${r.spec.stages[Math.min(r.status.stage, r.spec.stages.length - 1)]} %)`)),
    h('td', {}, r.created_by),
    h('td', { title: time(r.created_ms) }, ago(r.created_ms)),
    h('td', { title: time(r.updated_ms) }, ago(r.updated_ms)))));
    tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-id]');
      if (!tr) return;
      selRollout = Number(tr.dataset.id);
      update({ rollout: selRollout });
      refresh();
    });
    const list = h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'rollouts-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Rollout'), h('th', {}, 'Bundle'), h('th', {}, 'State'), h('th', {}, 'Stage'),
        h('th', {}, 'Started by'), h('th', {}, 'Started'), h('th', {}, 'Last change'))),
      tbody));
    replace(rolloutsBody, card(`Rollouts (${num(rollouts.length)})`, list), p ? detail(p) : null);
  }

  function detail(p) {
    const r = p.rollout;
    const stage = Math.min(r.status.stage, r.spec.stages.length - 1);
    const reason = r.status.reason && (r.state === 'paused' || r.state === 'aborted')
      ? h('p', { class: ['notice', 'warn'], dataset: { testid: 'rollout-reason' } }, `${r.state === 'paused' ? 'Paused' : 'Aborted'}: ${r.status.reason}`)
      : null;
    return h('section', { class: 'card rollout', dataset: { testid: 'rollout-detail', id: r.id, state: r.state } },
      h('header', { class: 'card-head' },
        h('div', { class: 'rollout-title' }, h('h2', {}, `Rollout #${r.id} of bundle ${r.version}`), rolloutStateBadge(r.state, { dataset: { testid: 'rollout-state' } }),
          h('span', { class: 'muted', dataset: { testid: 'rollout-stage' } }, `stage ${stage + 1} of ${r.spec.stages.length}`)),
        actions(r)),
      h('div', { class: 'card-body' },
        reason,
        stageSteps(r, p.stage_sizes),
        stateBar(p.states, p.assigned, p.targeted),
        h('div', { class: 'grid-2 rollout-facts' },
          kv([
            ['Targeted', `${num(p.targeted)} devices`],
            ['Assigned', h('span', { dataset: { testid: 'rollout-assigned' } }, `${num(p.assigned)} of ${num(p.targeted)}`)],
            ['Stage', `${stage + 1} of ${r.spec.stages.length}: ${r.spec.stages[stage]} % (${num(p.stage_sizes?.[stage])} devices), since ${ago(r.status.stage_started_ms)}`],
            ['Failures', h('span', { dataset: { testid: 'rollout-failure-percent' } }, failureCheck(p))],
            ['Alert rate', h('span', { dataset: { testid: 'rollout-alert-rate' } }, alertCheck(p))],
          ]),
          kv([
            ['Started', `${time(r.created_ms)} by ${r.created_by}`],
            ['Last change', h('span', { title: time(r.updated_ms) }, ago(r.updated_ms))],
            ['Settings', settings(r.spec)],
          ])),
        h('div', { class: 'grid-2' },
          h('div', {}, h('h3', {}, `Failed devices (${num(p.states?.failed || 0)})`), failures(p)),
          h('div', {}, h('h3', {}, 'History'), history(r)))));
  }

  function drawBundles() {
    const { bundles, bundle } = data;
    if (!bundles.length) {
      replace(bundlesBody, card('Rule bundles', empty('No bundle pushed yet: POST /api/v1/bundles a bundle signed with the fleet\'s bundle keys (picketctl bundle build, bundle sign).')));
      replace(bundleBody);
      return;
    }
    const now = Date.now();
    const tbody = h('tbody', {}, bundles.map((b) => h('tr', {
      dataset: { id: b.version }, class: b.version === selBundle ? 'selected' : '',
    },
    h('td', { class: 'strong' }, `${b.version}`),
    h('td', { class: 'num' }, num(b.rules.length)),
    h('td', { class: 'num nowrap' }, bytes(b.size)),
    h('td', { class: 'chips' }, targets(b.targets)),
    h('td', { class: 'chips' }, signerChips(b.signers)),
    h('td', { class: 'nowrap' }, b.uploaded_by, ' ', h('span', { class: 'muted', title: time(b.uploaded_ms) }, ago(b.uploaded_ms))),
    h('td', { class: 'nowrap' }, expiry(b.expires_unix, now)),
    h('td', {}, stateCounts(b.devices)))));
    tbody.addEventListener('click', (ev) => {
      if (ev.target.closest('a')) return;
      const tr = ev.target.closest('tr[data-id]');
      if (!tr) return;
      const v = Number(tr.dataset.id);
      selBundle = selBundle === v ? null : v;
      update({ bundle: selBundle || '' });
      refresh();
    });
    replace(bundlesBody, card(`Rule bundles (${num(bundles.length)})`, h('div', {},
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'bundles-table' } },
        h('thead', {}, h('tr', {}, h('th', {}, 'Version'), h('th', { class: 'num' }, 'Rules'), h('th', { class: 'num' }, 'Size'), h('th', {}, 'Targets'),
          h('th', {}, 'Signed by'), h('th', {}, 'Uploaded'), h('th', {}, 'Expires'), h('th', {}, 'Devices'))),
        tbody)),
      h('p', { class: 'muted small' }, 'Select a bundle to list its rules, and again to hide them.'))));
    replace(bundleBody, bundle ? bundleDetail(bundle) : null);
  }

  function bundleDetail(b) {
    const failed = (b.states || []).filter((s) => s.state === 'failed');
    const rules = [...b.rules].sort((x, y) => LEVELS.indexOf(y.level) - LEVELS.indexOf(x.level) || x.title.localeCompare(y.title));
    return h('section', { class: 'card', dataset: { testid: 'bundle-detail', version: b.version } },
      h('header', { class: 'card-head' }, h('h2', {}, `Bundle ${b.version}: ${num(b.rules.length)} rules`)),
      h('div', { class: 'card-body' },
        kv([
          ['SHA-256', h('span', { class: 'mono small' }, b.sha256)],
          ['Created', time(b.created_unix * 1000)],
          ['Expires', [time(b.expires_unix * 1000), ' ', expiry(b.expires_unix)]],
          ['Targets', h('span', { class: 'chips' }, targets(b.targets))],
          ['Signed by', h('span', { class: 'chips wrap' }, signerChips(b.signers))],
          ['Uploaded', `${time(b.uploaded_ms)} by ${b.uploaded_by}`],
        ]),
        h('div', { class: 'table-wrap bundle-rules' }, h('table', { class: 'table', dataset: { testid: 'bundle-rules' } },
          h('thead', {}, h('tr', {}, h('th', {}, 'Rule'), h('th', {}, 'Level'), h('th', {}, 'ATT&CK'), h('th', {}, 'File'))),
          h('tbody', {}, rules.map((r) => h('tr', {},
            h('td', {}, h('div', { class: 'strong rule-name' }, r.title), r.id ? h('div', { class: 'mono muted small' }, r.id) : null),
            h('td', {}, r.level ? levelBadge(r.level) : h('span', { class: 'muted' }, '—')),
            h('td', { class: 'chips' }, (r.techniques || []).map((t) => techniqueLink(t))),
            h('td', { class: 'mono small' }, r.path)))))),
        failed.length ? h('div', {}, h('h3', {}, `Devices that refused it (${num(failed.length)})`),
          h('table', { class: 'table' }, h('tbody', {}, failed.slice(0, 100).map((s) => h('tr', {},
            h('td', { class: 'nowrap' }, deviceLink(s.device_id)),
            h('td', { class: 'mono small wrap error-text' }, s.error || 'no error given')))))) : null));
  }

  /** Start a rollout of a bundle newer than every rollout's (operators). */
  function startForm() {
    const version = select([], '', { dataset: { testid: 'new-rollout-version' } });
    const num0 = (value, attrs = {}) => h('input', { type: 'number', class: 'tiny', value, ...attrs });
    const stages = h('input', { value: '10, 50, 100', class: 'narrow', dataset: { testid: 'new-rollout-stages' } });
    const auto = h('input', { type: 'checkbox', checked: true, dataset: { testid: 'new-rollout-auto' } });
    const promoteAt = num0(90, { min: 1, max: 100 });
    const bake = num0(0, { min: 0 });
    const maxFail = num0(10, { min: 0, max: 100, step: 'any' });
    const minFinished = num0(5, { min: 0 });
    const ratio = num0(5, { min: 0, step: 'any', placeholder: 'off' });
    const minAlerts = num0(50, { min: 0 });
    const onThreshold = select([['pause', 'pause'], ['abort', 'abort']], 'pause');
    const hint = h('p', { class: 'muted small' });
    const submit = button('Start rollout', async () => {
      const list = stages.value.split(/[\s,]+/).filter(Boolean).map(Number);
      if (!list.length || list.some((x) => !Number.isInteger(x))) throw new Error('Stages: cumulative percentages such as 10, 50, 100');
      const spec = {
        stages: list,
        auto_promote: auto.checked,
        promote_at_percent: Number(promoteAt.value),
        bake_secs: Number(bake.value || 0),
        max_failure_percent: Number(maxFail.value),
        min_finished: Number(minFinished.value || 0),
        max_alert_rate_ratio: ratio.value === '' ? null : Number(ratio.value),
        min_alerts: Number(minAlerts.value || 0),
        on_threshold: onThreshold.value,
      };
      const r = await post('/rollouts', { version: Number(version.value), spec });
      toast(`Rollout #${r.id} of bundle ${r.version} started`);
      selRollout = r.id;
      update({ rollout: r.id });
      await refresh();
    }, { class: 'btn primary', dataset: { testid: 'start-rollout' } });
    const el = card('Start a rollout', h('form', { class: 'form', dataset: { testid: 'new-rollout' }, onsubmit: (e) => e.preventDefault() },
      h('div', { class: 'inline-form' },
        field('Bundle', version),
        field('Stages (cumulative %)', stages),
        h('label', { class: 'toggle' }, auto, 'promote by itself'),
        field('Healthy at %', promoteAt),
        field('Bake (s)', bake)),
      h('div', { class: 'inline-form' },
        field('Max failed %', maxFail),
        field('…once finished', minFinished),
        field('Max alert rate ×', ratio),
        field('…once alerts', minAlerts),
        field('Then', onThreshold),
        submit),
      hint));
    const fill = ({ bundles, rollouts }) => {
      const newest = Math.max(0, ...rollouts.map((r) => r.version));
      const eligible = bundles.filter((b) => b.version > newest);
      const keep = version.value;
      replace(version, ...(eligible.length
        ? eligible.map((b) => h('option', { value: b.version }, `bundle ${b.version} (${b.rules.length} rules)`))
        : [h('option', { value: '' }, 'no bundle newer than the last rollout')]));
      if (eligible.some((b) => String(b.version) === keep)) version.value = keep;
      version.disabled = !eligible.length;
      submit.disabled = !eligible.length;
      const open = rollouts.find((r) => OPEN.has(r.state));
      hint.textContent = [
        'Stages are cumulative percentages of the targeted devices, the last one 100; devices go in a stable order, so the first stage is the same ring every time.',
        open ? `Starting supersedes the open rollout #${open.id} of bundle ${open.version}.` : '',
        'A new rollout needs a bundle newer than every rollout so far.',
      ].filter(Boolean).join(' ');
    };
    return { el, fill };
  }

  refresh();
  return {
    rollouts: rolloutsBody,
    form: form?.el ?? null,
    bundles: h('div', {}, bundlesBody, bundleBody),
    dispose() {
      disposed = true;
      clearTimeout(timer);
    },
  };
}
