// DOM construction without HTML parsing. Every string that reaches the page
// goes through textContent or setAttribute on a vetted attribute name, so
// attacker-controlled fields (command lines, paths, host names) stay text.
// Nothing in the UI assigns innerHTML/outerHTML or calls insertAdjacentHTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k.startsWith('on')) throw new Error(`refusing inline handler attribute ${k}`);
    else if (k === 'style') throw new Error('inline styles are refused by the CSP; use a class');
    else if (k === 'href' && typeof v === 'string' && !/^(#|\/|https:\/\/attack\.mitre\.org\/)/.test(v)) {
      throw new Error(`refusing link target ${v}`);
    } else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** h('div', {class: 'x', onclick: f}, 'text', child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs || {});
  append(el, children);
  return el;
}

/** An SVG element; attributes are set as they are (numbers, colours). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** A link inside the app (hash route). */
export function link(route, ...children) {
  return h('a', { href: `#${route}` }, ...children);
}

/** A button that shows progress and errors while `action` runs. */
export function button(label, action, attrs = {}) {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', async (ev) => {
    ev.preventDefault();
    if (b.disabled) return;
    b.disabled = true;
    try {
      await action(ev);
    } catch (e) {
      toast(e.message || String(e), 'error');
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

let toastBox;
export function toast(message, kind = 'info') {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.appendChild(toastBox);
  }
  const t = h('div', { class: `toast toast-${kind}` }, message);
  toastBox.appendChild(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input,
    hint ? h('span', { class: 'field-hint' }, hint) : null);
}

export function select(options, value, attrs = {}) {
  const el = h('select', attrs);
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    const opt = h('option', { value: v }, label);
    if (String(v) === String(value ?? '')) opt.selected = true;
    el.appendChild(opt);
  }
  return el;
}

/** A card with a title and a body. */
export function card(title, body, attrs = {}) {
  return h('section', { class: ['card', attrs.class] },
    title ? h('header', { class: 'card-head' }, h('h2', {}, title), attrs.extra || null) : null,
    h('div', { class: 'card-body' }, body));
}

export function empty(text) {
  return h('div', { class: 'empty' }, text);
}
