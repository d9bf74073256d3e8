// Sign-in, and first-run setup while `POST /api/v1/setup` is still open.

import { h, replace, field } from '../dom.js';
import { api, post, get } from '../api.js';

/** Whether setup is open, without side effects: an empty name is refused
 * with 400 while no user exists and 409 once one does. */
async function setupOpen() {
  try {
    await api('POST', '/setup', { name: '', password: '' }, { quiet401: true });
    return false;
  } catch (e) {
    return e.status === 400;
  }
}

export function render({ query, onLogin }) {
  const box = h('div', { class: 'login-box' });
  const el = h('div', { class: 'login-page' },
    h('div', { class: 'login-brand' }, h('span', { class: 'brand-mark big' }), h('h1', {}, 'Picket'),
      h('p', { class: 'muted' }, 'Fleet console')),
    box);

  function signInForm() {
    const name = h('input', { name: 'name', autocomplete: 'username', required: true, autofocus: true });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const err = h('div', { class: 'form-error', role: 'alert' });
    const submit = h('button', { type: 'submit', class: 'btn primary wide' }, 'Sign in');
    const form = h('form', { class: 'form', dataset: { testid: 'login' } },
      h('h2', {}, 'Sign in'),
      field('User name', name),
      field('Password', password),
      err, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      submit.disabled = true;
      try {
        const r = await post('/auth/login', { name: name.value, password: password.value });
        onLogin(r.user, query.next);
      } catch (e) {
        err.textContent = e.status === 401 ? 'Wrong user name or password.' : e.message;
        password.select();
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  function setupForm() {
    const name = h('input', { name: 'name', autocomplete: 'username', required: true, value: 'admin' });
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
    const again = h('input', { name: 'again', type: 'password', autocomplete: 'new-password', required: true });
    const err = h('div', { class: 'form-error', role: 'alert' });
    const form = h('form', { class: 'form', dataset: { testid: 'setup' } },
      h('h2', {}, 'First run'),
      h('p', { class: 'muted' }, 'No user exists yet. Create the first administrator; further users are added under Admin.'),
      field('User name', name),
      field('Password', password, 'At least 8 characters.'),
      field('Password again', again),
      err, h('button', { type: 'submit', class: 'btn primary wide' }, 'Create administrator'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      if (password.value !== again.value) {
        err.textContent = 'The passwords differ.';
        return;
      }
      try {
        await post('/setup', { name: name.value, password: password.value });
        const r = await post('/auth/login', { name: name.value, password: password.value });
        onLogin(r.user, '#/');
      } catch (e) {
        err.textContent = e.message;
      }
    });
    return form;
  }

  replace(box, signInForm());
  // Already signed in (e.g. a bookmarked #/login)? Go on.
  get('/auth/me', { quiet401: true }).then((u) => onLogin(u, query.next)).catch(() => {
    setupOpen().then((open) => { if (open) replace(box, setupForm()); });
  });
  return { el, title: 'Sign in' };
}
