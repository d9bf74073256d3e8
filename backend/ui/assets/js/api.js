// The REST client. The session is the HttpOnly `picket_session` cookie the
// login sets; every state-changing request carries `X-Picket-Csrf: 1`, which
// the API requires of cookie-authenticated POST/PUT/PATCH/DELETE (a cross-site
// page cannot send a custom header without a CORS preflight, never granted).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = new Set();
/** Called with no argument when the server answers 401 (session gone). */
export function onUnauthorized(f) {
  listeners.add(f);
}

export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['X-Picket-Csrf'] = '1';
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
  }
  let res;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, 'network', `the backend cannot be reached (${e.message})`);
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text };
    }
  }
  if (!res.ok) {
    if (res.status === 401 && !quiet401) for (const f of listeners) f();
    throw new ApiError(res.status, data?.code || 'http', data?.error || `HTTP ${res.status}`);
  }
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body) => api('POST', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const put = (path, body) => api('PUT', path, body);

/** `?a=1&b=2` from an object, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

const RANK = { viewer: 0, analyst: 1, operator: 2, admin: 3 };
/** Whether `user`'s role includes `role` (admin > operator > analyst > viewer). */
export function can(user, role) {
  return Boolean(user) && (RANK[user.role] ?? -1) >= RANK[role];
}

/** The device inventory, cached for names; refreshed at most every 30 s. */
let devices = null;
let devicesAt = 0;
let devicesPending = null;
export async function deviceMap({ fresh = false } = {}) {
  if (!fresh && devices && Date.now() - devicesAt < 30000) return devices;
  if (!devicesPending) {
    devicesPending = get('/devices').then((list) => {
      devices = new Map(list.map((d) => [d.id, d]));
      devicesAt = Date.now();
      return devices;
    }).finally(() => { devicesPending = null; });
  }
  return devicesPending;
}

/** Updates the cache from a live `device` message. */
export function noteDevice(d, online) {
  if (devices) devices.set(d.id, { ...d, online });
}

export function hostname(id) {
  return devices?.get(id)?.hostname;
}
