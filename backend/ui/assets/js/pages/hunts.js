// Hunts: EVTX files uploaded as hunting jobs. The list page has the upload
// form (operators and admins; multipart/form-data with `name` and one `file`
// part per file, sent with XMLHttpRequest for its upload progress) and the
// jobs with their state and progress; the job page (#/hunts/<id>) shows
// every file's state (a corrupt file with its error), the timeline of
// matches (paged, event-time order, rule author credited: SigmaHQ rules are
// DRL 1.1) and a link to the job's alerts (#/alerts?hunt=<id>). Progress
// comes from the live feed (`hunt` messages) and, while a job is not
// finished, a poll every 2 s (the feed may be down or lagging).

import { h, replace, card, empty, button, field, toast } from '../dom.js';
import { get, api, can, qs } from '../api.js';
import { time, ago, num, bytes, levelBadge, techniqueLink } from '../format.js';
import { subscribe } from '../live.js';

const TIMELINE_PAGE = 100;
const POLL_MS = 2000;
const ACTIVE = new Set(['queued', 'running']);

function stateBadge(state) {
  return h('span', { class: `badge hunt-${state}`, dataset: { testid: 'hunt-state' } }, state);
}

function progressBar(job) {
  const total = job.bytes_total || 0;
  const done = ACTIVE.has(job.state) ? job.bytes_done : Math.max(job.bytes_done, total);
  const pct = total ? Math.floor((100 * done) / total) : 100;
  return h('span', { class: 'hunt-progress' },
    h('progress', { max: String(total || 1), value: String(Math.min(done, total || 1)), dataset: { testid: 'hunt-progress' } }),
    h('span', { class: 'muted small' }, `${pct}% · ${num(job.files_done)}/${num(job.files_total)} files · ${num(job.records_done)} records`));
}

/** POSTs the form with upload progress; resolves with the created job. */
function upload(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1/hunts');
    xhr.setRequestHeader('X-Picket-Csrf', '1');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded, ev.total);
    });
    xhr.addEventListener('load', () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = { error: xhr.responseText };
      }
      if (xhr.status === 201) resolve(data);
      else reject(new Error(data?.error || `HTTP ${xhr.status}`));
    });
    xhr.addEventListener('error', () => reject(new Error('the backend cannot be reached')));
    xhr.send(form);
  });
}

function uploadForm(onCreated) {
  const name = h('input', { type: 'text', maxlength: '200', placeholder: 'Case or host name', dataset: { testid: 'hunt-name' } });
  const files = h('input', { type: 'file', multiple: true, accept: '.evtx', dataset: { testid: 'hunt-files' } });
  const sent = h('progress', { max: '1', value: '0', class: 'hidden' });
  const submit = button('Upload and hunt', async () => {
    if (!files.files.length) throw new Error('Choose at least one EVTX file.');
    const form = new FormData();
    form.append('name', name.value.trim());
    for (const f of files.files) form.append('file', f, f.name);
    sent.classList.remove('hidden');
    try {
      const job = await upload(form, (loaded, total) => { sent.max = String(total); sent.value = String(loaded); });
      toast(`Job #${job.id} queued.`);
      name.value = '';
      files.value = '';
      onCreated(job);
    } finally {
      sent.classList.add('hidden');
    }
  }, { class: 'btn primary', dataset: { testid: 'hunt-submit' } });
  return card('New hunt', h('div', { class: 'form-grid' },
    field('Name', name, 'Defaults to the first file\'s name.'),
    field('EVTX files', files, 'Windows event logs (.evtx). Files that are not EVTX or cannot be read are reported and skipped.'),
    h('div', { class: 'form-actions' }, submit, sent)));
}

function jobRow(job) {
  return h('tr', { dataset: { id: String(job.id) } },
    h('td', { class: 'num' }, `#${job.id}`),
    h('td', {}, h('a', { href: `#/hunts/${job.id}`, class: 'strong' }, job.name)),
    h('td', {}, stateBadge(job.state)),
    h('td', {}, progressBar(job)),
    h('td', { class: 'num' }, num(job.matches)),
    h('td', { class: 'num' }, bytes(job.bytes_total)),
    h('td', {}, job.created_by),
    h('td', { title: time(job.created_ms) }, ago(job.created_ms)));
}

export function render({ user }) {
  const tbody = h('tbody');
  const jobs = new Map();
  let timer = null;
  let seq = 0;

  function draw() {
    const list = [...jobs.values()].sort((a, b) => b.id - a.id);
    replace(tbody, ...(list.length ? list.map(jobRow) : [h('tr', {}, h('td', { colspan: 8 }, empty('No hunting job yet.')))]));
    el.dataset.loaded = '1';
    clearTimeout(timer);
    if (list.some((j) => ACTIVE.has(j.state))) timer = setTimeout(load, POLL_MS);
  }

  async function load() {
    const my = ++seq;
    try {
      const list = await get('/hunts');
      if (my !== seq) return;
      jobs.clear();
      for (const j of list) jobs.set(j.id, j);
      draw();
    } catch (e) {
      replace(tbody, h('tr', {}, h('td', { colspan: 8 }, h('div', { class: 'error-box' }, e.message))));
    }
  }

  const unsubscribe = subscribe((batch) => {
    let changed = false;
    for (const m of batch) {
      if (m.type === 'hunt') {
        const { type, ...job } = m;
        jobs.set(job.id, job);
        changed = true;
      }
    }
    if (changed) draw();
  });

  const el = h('div', { class: 'page hunts-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Hunts')),
    h('p', { class: 'notice' }, 'Upload Windows event logs (EVTX): the backend runs its agent rule set over them and shows the matches as a timeline and as alerts of the job, apart from the fleet\'s alerts.'),
    can(user, 'operator') ? uploadForm((job) => { jobs.set(job.id, job); draw(); }) : null,
    card('Jobs', h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'hunts-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Name'), h('th', {}, 'State'), h('th', {}, 'Progress'),
        h('th', { class: 'num' }, 'Matches'), h('th', { class: 'num' }, 'Size'), h('th', {}, 'By'), h('th', {}, 'Created'))),
      tbody))));
  load();
  return { el, title: 'Hunts', dispose: () => { unsubscribe(); clearTimeout(timer); } };
}

function fileRow(f) {
  return h('tr', { dataset: { testid: 'hunt-file', state: f.state } },
    h('td', {}, f.name, h('div', { class: 'mono muted small', title: 'SHA-256' }, f.sha256)),
    h('td', {}, stateBadge(f.state)),
    h('td', { class: 'num' }, bytes(f.size)),
    h('td', { class: 'num' }, num(f.records)),
    h('td', { class: 'num' }, num(f.matches)),
    h('td', { class: f.state === 'failed' ? 'form-error' : 'muted', dataset: { testid: 'hunt-file-error' } }, f.error || ''));
}

function timelineRow(r) {
  return h('tr', { dataset: { testid: 'timeline-row', id: r.alert_id } },
    h('td', { class: 'nowrap mono', title: time(r.timestamp_ms) }, r.timestamp || time(r.timestamp_ms)),
    h('td', {}, r.computer),
    h('td', { class: 'small channel' }, r.channel),
    h('td', { class: 'num' }, r.event_id),
    h('td', { class: 'num' }, r.record_id ?? ''),
    h('td', { class: 'file' }, r.file),
    h('td', {}, levelBadge(r.level)),
    h('td', { class: 'rule' }, h('a', { href: `#/alerts/${r.alert_id}`, class: 'rule-title', dataset: { testid: 'timeline-rule' } }, r.rule_title || r.rule_id),
      h('div', { class: 'mono muted small' }, r.rule_id)),
    h('td', { class: 'author', dataset: { testid: 'timeline-author' } }, r.rule_author || h('span', { class: 'muted' }, 'not given')),
    h('td', { class: 'chips' }, (r.techniques || []).slice(0, 3).map((t) => techniqueLink(t))));
}

export function renderJob({ id, user }) {
  const head = h('div', {}, h('div', { class: 'loading' }, 'Loading…'));
  const files = h('tbody');
  const rows = h('tbody');
  const info = h('span', { class: 'muted', dataset: { testid: 'timeline-info' } });
  let offset = 0;
  let total = 0;
  let job = null;
  let timer = null;
  const newer = button('‹ Earlier', async () => { offset = Math.max(0, offset - TIMELINE_PAGE); await loadTimeline(); }, { class: 'btn' });
  const older = button('Later ›', async () => { offset += TIMELINE_PAGE; await loadTimeline(); }, { class: 'btn', dataset: { testid: 'timeline-next' } });

  function drawHead() {
    const actions = [];
    if (can(user, 'operator') && ACTIVE.has(job.state)) {
      actions.push(button('Cancel', async () => { job = await api('POST', `/hunts/${job.id}/cancel`); drawHead(); }, { class: 'btn', dataset: { testid: 'hunt-cancel' } }));
    }
    if (can(user, 'operator')) {
      actions.push(button('Delete', async () => {
        if (!window.confirm(`Delete job #${job.id}, its files and its ${job.matches} alerts?`)) return;
        await api('DELETE', `/hunts/${job.id}`);
        location.hash = '#/hunts';
      }, { class: 'btn danger', dataset: { testid: 'hunt-delete' } }));
    }
    replace(head,
      h('div', { class: 'page-head' }, h('h1', {}, `Hunt #${job.id}: ${job.name}`), h('div', { class: 'page-actions' }, ...actions)),
      h('div', { class: 'kv-row' },
        stateBadge(job.state), progressBar(job),
        h('span', {}, `${num(job.matches)} matches`),
        h('a', { href: `#/alerts${qs({ hunt: job.id })}`, class: 'btn', dataset: { testid: 'hunt-alerts' } }, 'Alerts of this job'),
        h('span', { class: 'muted small' }, `uploaded by ${job.created_by}, ${time(job.created_ms)}`)),
      job.error ? h('div', { class: 'notice' }, job.error) : null);
  }

  async function loadTimeline() {
    const r = await get(`/hunts/${encodeURIComponent(id)}/timeline${qs({ offset, limit: TIMELINE_PAGE })}`);
    total = r.total;
    replace(rows, ...(r.rows.length ? r.rows.map(timelineRow) : [h('tr', {}, h('td', { colspan: 10 }, empty(ACTIVE.has(job?.state) ? 'No match yet.' : 'No match.')))]));
    info.textContent = r.rows.length ? `${num(offset + 1)}–${num(offset + r.rows.length)} of ${num(total)}` : '';
    newer.disabled = offset === 0;
    older.disabled = offset + r.rows.length >= total;
  }

  async function load() {
    clearTimeout(timer);
    try {
      const d = await get(`/hunts/${encodeURIComponent(id)}`);
      job = d;
      drawHead();
      replace(files, ...d.files.map(fileRow));
      await loadTimeline();
      el.dataset.loaded = '1';
      el.dataset.state = d.state;
      if (ACTIVE.has(d.state)) timer = setTimeout(load, POLL_MS);
    } catch (e) {
      replace(head, h('div', { class: 'error-box' }, e.message));
    }
  }

  const unsubscribe = subscribe((batch) => {
    // A finished job is final: one reload shows its last files and rows.
    if (batch.some((m) => m.type === 'hunt' && String(m.id) === String(id) && job && m.state !== job.state)) load();
  });

  const el = h('div', { class: 'page hunt-page' },
    head,
    card('Files', h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'hunt-files-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Size'),
        h('th', { class: 'num' }, 'Records'), h('th', { class: 'num' }, 'Matches'), h('th', {}, 'Error'))),
      files))),
    card('Timeline', h('div', {},
      h('div', { class: 'table-wrap' }, h('table', { class: 'table timeline-table', dataset: { testid: 'timeline-table' } },
        h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Computer'), h('th', {}, 'Channel'), h('th', { class: 'num' }, 'Event'),
          h('th', { class: 'num' }, 'Record'), h('th', {}, 'File'), h('th', {}, 'Level'), h('th', {}, 'Rule'), h('th', {}, 'Author'), h('th', {}, 'ATT&CK'))),
        rows)),
      h('div', { class: 'pager' }, info, h('span', { class: 'spacer' }), newer, older))));
  load();
  return { el, title: `Hunt #${id}`, dispose: () => { unsubscribe(); clearTimeout(timer); } };
}
