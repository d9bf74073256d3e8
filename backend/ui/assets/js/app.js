// The shell: session, navigation, hash routing (#/alerts/<id>?level=high).
// Each page module exports `render(ctx)` returning `{ el, dispose? }`.

import { h, replace, button, toast } from './dom.js';
import { get, post, can, onUnauthorized, deviceMap } from './api.js';
import * as live from './live.js';

const PAGES = {
  login: () => import('./pages/login.js'),
  overview: () => import('./pages/overview.js'),
  alerts: () => import('./pages/alerts.js'),
  alert: () => import('./pages/alert.js'),
  devices: () => import('./pages/devices.js'),
  device: () => import('./pages/device.js'),
  rules: () => import('./pages/rules.js'),
  hunts: () => import('./pages/hunts.js'),
  hunt: () => import('./pages/hunts.js').then((m) => ({ render: m.renderJob })),
  admin: () => import('./pages/admin.js'),
};

const NAV = [
  ['overview', '#/', 'Overview', 'viewer'],
  ['alerts', '#/alerts', 'Alerts', 'viewer'],
  ['devices', '#/devices', 'Devices', 'viewer'],
  ['rules', '#/rules', 'Rules', 'viewer'],
  ['hunts', '#/hunts', 'Hunts', 'viewer'],
  ['admin', '#/admin', 'Admin', 'operator'],
];

const root = document.getElementById('app');
let user = null;
let current = null;
let renderSeq = 0;

/** `#/alerts/abc?level=high` → { page, id, query } */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const [path, q = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(q));
  let page = parts[0] || 'overview';
  let id = null;
  if ((page === 'alerts' || page === 'devices' || page === 'hunts') && parts[1]) {
    id = parts[1];
    page = { alerts: 'alert', devices: 'device', hunts: 'hunt' }[page];
  }
  if (!PAGES[page]) page = 'notfound';
  return { page, id, query, tab: parts[1] };
}

/** Sets the hash query without adding a history entry per keystroke. */
export function setQuery(query, { push = false } = {}) {
  const { page } = parseHash();
  const base = location.hash.split('?')[0] || '#/';
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== '' && v !== undefined && v !== null) u.set(k, v);
  const s = u.toString();
  const next = s ? `${base}?${s}` : base;
  if (next === location.hash) return;
  if (push) history.pushState(null, '', next);
  else history.replaceState(null, '', next);
  return page;
}

function navBar(active) {
  const status = h('span', { class: 'live-dot', title: 'live feed' });
  const statusText = h('span', { class: 'live-text' });
  live.onStatus((s) => {
    status.className = `live-dot live-${s}`;
    statusText.textContent = s === 'live' ? 'live' : s;
  });
  return h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/' }, h('span', { class: 'brand-mark' }), 'Picket'),
    h('nav', { class: 'nav' },
      NAV.filter(([, , , role]) => can(user, role)).map(([key, href, label]) => h('a', {
        href, class: key === active ? 'active' : '', dataset: { nav: key },
      }, label))),
    h('div', { class: 'topbar-right' },
      h('span', { class: 'live' }, status, statusText),
      h('span', { class: 'user', dataset: { testid: 'user' } },
        h('span', { class: 'user-name' }, user.name),
        h('span', { class: `badge role role-${user.role}` }, user.role)),
      button('Sign out', signOut, { class: 'btn ghost', dataset: { testid: 'signout' } })));
}

async function signOut() {
  try {
    await post('/auth/logout');
  } catch {
    // The session may already be gone; signing out locally is what matters.
  }
  user = null;
  live.stop();
  location.hash = '#/login';
}

async function route() {
  const seq = ++renderSeq;
  const r = parseHash();
  if (!user && r.page !== 'login') {
    try {
      user = await get('/auth/me', { quiet401: true });
    } catch {
      location.replace(`#/login?next=${encodeURIComponent(location.hash || '#/')}`);
      return;
    }
  }
  if (seq !== renderSeq) return;
  if (current?.dispose) current.dispose();
  current = null;
  if (r.page === 'login') {
    live.stop();
    const mod = await PAGES.login();
    if (seq !== renderSeq) return;
    current = mod.render({ query: r.query, onLogin });
    replace(root, current.el);
    return;
  }
  live.start();
  deviceMap().catch(() => {});
  const main = h('main', { class: 'main' }, h('div', { class: 'loading' }, 'Loading…'));
  const navKey = { alert: 'alerts', device: 'devices', hunt: 'hunts' }[r.page] || r.page;
  replace(root, navBar(navKey), main);
  if (r.page === 'notfound') {
    replace(main, h('div', { class: 'empty' }, 'No such page. ', h('a', { href: '#/' }, 'Back to the overview')));
    return;
  }
  try {
    const mod = await PAGES[r.page]();
    if (seq !== renderSeq) return;
    current = mod.render({ ...r, user, setQuery });
    replace(main, current.el);
    document.title = `${current.title || navKey[0].toUpperCase() + navKey.slice(1)} · Picket`;
  } catch (e) {
    if (seq !== renderSeq) return;
    replace(main, h('div', { class: 'error-box' }, `This page failed to load: ${e.message}`));
    console.error(e);
  }
}

function onLogin(u, next) {
  user = u;
  location.hash = next && next.startsWith('#/') && !next.startsWith('#/login') ? next : '#/';
}

onUnauthorized(() => {
  if (parseHash().page === 'login') return;
  user = null;
  toast('Your session ended: sign in again.', 'error');
  location.hash = `#/login?next=${encodeURIComponent(location.hash)}`;
});

// Pages that only change their own query (filters) set `ignoreNextHash`
// through history.replaceState, which fires no hashchange; real navigation
// (links, back/forward) does.
window.addEventListener('hashchange', route);
route();
