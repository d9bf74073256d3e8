// Administration: users and roles (admin), enrollment tokens (operator and
// up; a new token's value is shown once), the audit log (admin).

import { h, replace, button, card, field, select, toast, empty } from '../dom.js';
import { get, post, patch, qs, can } from '../api.js';
import { time, ago } from '../format.js';

const ROLES = ['admin', 'operator', 'analyst', 'viewer'];
const TTLS = [[3600, '1 hour'], [86400, '1 day'], [7 * 86400, '7 days'], [30 * 86400, '30 days']];

function usersTab(user) {
  const tbody = h('tbody');
  const el = h('div', {});
  async function load() {
    const users = await get('/users');
    replace(tbody, ...users.map((u) => {
      const role = select(ROLES, u.role, { dataset: { testid: `role-${u.name}` } });
      role.addEventListener('change', async () => {
        try {
          await patch(`/users/${u.id}`, { role: role.value });
          toast(`${u.name} is now ${role.value}`);
        } catch (e) {
          toast(e.message, 'error');
          role.value = u.role;
        }
        load();
      });
      const pw = h('input', { type: 'password', placeholder: 'new password', class: 'narrow', autocomplete: 'new-password' });
      return h('tr', {},
        h('td', { class: 'strong' }, u.name, u.name === user.name ? h('span', { class: 'muted' }, ' (you)') : null),
        h('td', {}, role),
        h('td', {}, u.disabled ? h('span', { class: 'badge health-revoked' }, 'disabled') : h('span', { class: 'badge health-online' }, 'enabled')),
        h('td', { title: time(u.created_ms) }, ago(u.created_ms)),
        h('td', { class: 'actions' },
          button(u.disabled ? 'Enable' : 'Disable', async () => {
            await patch(`/users/${u.id}`, { disabled: !u.disabled });
            toast(`${u.name} ${u.disabled ? 'enabled' : 'disabled'}`);
            load();
          }, { class: 'btn small' }),
          pw,
          button('Set password', async () => {
            if (!pw.value) return;
            await patch(`/users/${u.id}`, { password: pw.value });
            pw.value = '';
            toast(`Password of ${u.name} changed; their sessions ended.`);
          }, { class: 'btn small' })));
    }));
  }
  const name = h('input', { required: true, autocomplete: 'off', dataset: { testid: 'new-user-name' } });
  const password = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password', dataset: { testid: 'new-user-password' } });
  const role = select(ROLES, 'analyst', { dataset: { testid: 'new-user-role' } });
  const form = h('form', { class: 'inline-form' }, field('Name', name), field('Password', password), field('Role', role),
    button('Create user', async () => {
      await post('/users', { name: name.value.trim(), password: password.value, role: role.value });
      toast(`User ${name.value} created`);
      name.value = '';
      password.value = '';
      load();
    }, { class: 'btn primary', dataset: { testid: 'create-user' } }));
  replace(el,
    card('Users', h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'users-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Role'), h('th', {}, 'State'), h('th', {}, 'Created'), h('th', {}, ''))), tbody))),
    card('New user', h('div', {}, form, h('p', { class: 'muted small' },
      'Roles: viewer reads; analyst also triages alerts; operator also enrolls and revokes devices; admin also manages users and reads the audit log.'))));
  load().catch((e) => replace(tbody, h('tr', {}, h('td', { colspan: 5 }, e.message))));
  return el;
}

function tokensTab() {
  const tbody = h('tbody');
  const shown = h('div', {});
  async function load() {
    const tokens = await get('/enrollment-tokens');
    const now = Date.now();
    replace(tbody, ...tokens.sort((a, b) => b.created_ms - a.created_ms).map((t) => h('tr', {},
      h('td', { class: 'strong' }, t.label),
      h('td', {}, t.created_by),
      h('td', { title: time(t.created_ms) }, ago(t.created_ms)),
      h('td', {}, time(t.expires_ms)),
      h('td', {}, t.used_ms ? h('span', { class: 'badge health-offline' }, 'used')
        : t.expires_ms < now ? h('span', { class: 'badge health-stale' }, 'expired') : h('span', { class: 'badge health-online' }, 'unused')),
      h('td', {}, t.used_by ? h('a', { href: `#/devices/${t.used_by}`, class: 'mono small' }, t.used_by) : ''))));
    if (!tokens.length) tbody.appendChild(h('tr', {}, h('td', { colspan: 6 }, empty('No token yet.'))));
  }
  const label = h('input', { required: true, placeholder: 'site 12 gateway', dataset: { testid: 'token-label' } });
  const ttl = select(TTLS, 86400);
  const form = h('form', { class: 'inline-form' }, field('Label', label), field('Valid for', ttl),
    button('Create token', async () => {
      const r = await post('/enrollment-tokens', { label: label.value.trim(), ttl_secs: Number(ttl.value) });
      const value = h('code', { class: 'token-value mono', dataset: { testid: 'token-value' } }, r.token);
      replace(shown, h('div', { class: 'token-once' },
        h('strong', {}, 'Copy the token now: it is not shown again.'), value,
        button('Copy', async () => { await navigator.clipboard.writeText(r.token); toast('Copied'); }, { class: 'btn small' }),
        h('p', { class: 'muted small' }, `On the appliance: picketd enroll --url ${location.origin} --token <token>. Single use; expires ${time(r.expires_ms)}.`)));
      label.value = '';
      load();
    }, { class: 'btn primary', dataset: { testid: 'create-token' } }));
  load().catch((e) => replace(tbody, h('tr', {}, h('td', { colspan: 6 }, e.message))));
  return h('div', {},
    card('New enrollment token', h('div', {}, form, shown)),
    card('Enrollment tokens', h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'tokens-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Label'), h('th', {}, 'Created by'), h('th', {}, 'Created'), h('th', {}, 'Expires'), h('th', {}, 'State'), h('th', {}, 'Device'))), tbody))));
}

function auditTab(query, setQuery) {
  const tbody = h('tbody');
  const actor = h('input', { placeholder: 'actor', value: query.actor || '', class: 'narrow' });
  const action = select([['', 'Any action'], ['auth.', 'auth.*'], ['user.', 'user.*'], ['token.', 'token.*'], ['device.', 'device.*'], ['alert.', 'alert.*'], ['bundle.', 'bundle.*'], ['rollout.', 'rollout.*'], ['setup', 'setup']], query.action || '');
  let befores = [''];
  let page = 0;
  let next = null;
  const newer = button('‹ Newer', async () => { page -= 1; await load(); }, { class: 'btn' });
  const older = button('Older ›', async () => { befores[page + 1] = next; page += 1; await load(); }, { class: 'btn' });
  async function load() {
    const r = await get(`/audit${qs({ actor: actor.value.trim(), action: action.value, before: befores[page], limit: 100 })}`);
    next = r.next;
    newer.disabled = page === 0;
    older.disabled = !next;
    replace(tbody, ...r.entries.map((e) => h('tr', {},
      h('td', { class: 'nowrap mono', title: ago(e.at_ms) }, time(e.at_ms)),
      h('td', { class: 'strong' }, e.actor),
      h('td', {}, h('span', { class: 'chip' }, e.action)),
      h('td', { class: 'mono small' }, e.action.startsWith('alert.') ? h('a', { href: `#/alerts/${e.target}` }, e.target)
        : e.action.startsWith('device.') ? h('a', { href: `#/devices/${e.target}` }, e.target)
          : e.action.startsWith('rollout.') ? h('a', { href: `#/rules?rollout=${encodeURIComponent(e.target)}` }, e.target)
            : e.action.startsWith('bundle.') ? h('a', { href: `#/rules?bundle=${encodeURIComponent(e.target)}` }, e.target) : e.target),
      h('td', { class: 'mono small detail' }, JSON.stringify(e.detail)))));
    if (!r.entries.length) tbody.appendChild(h('tr', {}, h('td', { colspan: 5 }, empty('No entry.'))));
  }
  const reload = () => {
    befores = [''];
    page = 0;
    setQuery({ actor: actor.value.trim(), action: action.value });
    load().catch((e) => toast(e.message, 'error'));
  };
  actor.addEventListener('change', reload);
  action.addEventListener('change', reload);
  load().catch((e) => replace(tbody, h('tr', {}, h('td', { colspan: 5 }, e.message))));
  return card('Audit log', h('div', {},
    h('div', { class: 'filters' }, actor, action),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table', dataset: { testid: 'audit-table' } },
      h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Actor'), h('th', {}, 'Action'), h('th', {}, 'Target'), h('th', {}, 'Detail'))), tbody)),
    h('div', { class: 'pager' }, h('span', { class: 'spacer' }), newer, older)));
}

export function render({ tab, user, query, setQuery }) {
  const tabs = [
    ['users', 'Users and roles', 'admin'],
    ['tokens', 'Enrollment tokens', 'operator'],
    ['audit', 'Audit log', 'admin'],
  ].filter(([, , role]) => can(user, role));
  if (!tabs.length) return { el: h('div', { class: 'error-box' }, 'Your role has no administration rights.'), title: 'Admin' };
  const active = tabs.find(([k]) => k === tab)?.[0] || tabs[0][0];
  const body = active === 'users' ? usersTab(user) : active === 'tokens' ? tokensTab() : auditTab(query, setQuery);
  return {
    el: h('div', { class: 'page admin-page' },
      h('div', { class: 'page-head' }, h('h1', {}, 'Administration')),
      h('nav', { class: 'tabs' }, tabs.map(([k, label]) => h('a', { href: `#/admin/${k}`, class: k === active ? 'active' : '' }, label))),
      body),
    title: 'Admin',
  };
}
