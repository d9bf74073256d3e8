// Formatting helpers: times, numbers, levels, ATT&CK links.

import { h } from './dom.js';
import { techniqueName } from './attack.js';

export const LEVELS = ['informational', 'low', 'medium', 'high', 'critical'];
export const LEVEL_SHORT = { informational: 'info', low: 'low', medium: 'medium', high: 'high', critical: 'critical' };
export const STATUSES = ['new', 'acknowledged', 'resolved'];

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `2025-05-01 14:03:07` in local time. */
export function time(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function shortTime(ms) {
  const d = new Date(ms);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** `3 min ago`. */
export function ago(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return 'never';
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return 'in the future';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(secs) {
  if (secs === null || secs === undefined) return '—';
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ${Math.floor((secs % 3600) / 60)} min`;
  return `${Math.floor(secs / 86400)} d ${Math.floor((secs % 86400) / 3600)} h`;
}

const nf = new Intl.NumberFormat('en');
export const num = (n) => (n === null || n === undefined ? '—' : nf.format(n));

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function levelBadge(level) {
  return h('span', { class: `badge level-${level}`, title: level }, LEVEL_SHORT[level] || level);
}

export function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, status);
}

/** A device's states for a rule bundle, in the order a rollout's bar draws them. */
export const BUNDLE_STATES = ['active', 'verified', 'downloading', 'pending', 'failed'];

export function bundleStateBadge(state, attrs = {}, label = state) {
  return h('span', { class: `badge bstate-${state}`, ...attrs }, label);
}

/** running, paused, completed, aborted or superseded. */
export function rolloutStateBadge(state, attrs = {}) {
  return h('span', { class: `badge rollout-${state}`, ...attrs }, state);
}

/** `12.5 %`, or `—` when there is nothing to divide. */
export function percent(x, digits = 1) {
  return x === null || x === undefined ? '—' : `${Number(x).toFixed(digits)} %`;
}

/** https://attack.mitre.org/techniques/T1059/004/ for T1059.004. */
export function techniqueUrl(id) {
  const m = /^T(\d{4})(?:\.(\d{3}))?$/.exec(id);
  if (!m) return null;
  return `https://attack.mitre.org/techniques/T${m[1]}/${m[2] ? `${m[2]}/` : ''}`;
}

/** A technique chip linking to MITRE's page (new tab, no referrer). */
export function techniqueLink(id, { withName = false } = {}) {
  const url = techniqueUrl(id);
  const name = techniqueName(id);
  const label = withName && name ? `${id} ${name}` : id;
  if (!url) return h('span', { class: 'chip' }, id);
  return h('a', {
    class: 'chip', href: url, target: '_blank', rel: 'noopener noreferrer', title: name || id,
  }, label);
}

/** Parses `<input type=datetime-local>` to ms, or ''. */
export function localInputToMs(v) {
  if (!v) return '';
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? t : '';
}

export function msToLocalInput(ms) {
  if (!ms) return '';
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The most telling string of an alert for a one-line list. */
export function alertSubject(a) {
  return a.command_line || a.path || a.image || a.event?.dst_host || '';
}
