// The live feed: one WebSocket to /api/v1/stream for the whole app,
// reconnecting with backoff. Messages are queued and handed to subscribers
// once per animation frame as one array, so a burst of 1,000 alerts/s costs
// each page one DOM update per frame instead of one per alert. The queue is
// bounded: beyond QUEUE_CAP messages between two frames (a hidden tab gets
// no frames) the oldest are dropped and counted as skipped.

import { noteDevice } from './api.js';

const QUEUE_CAP = 5000;
const subscribers = new Set();
const statusListeners = new Set();
let ws = null;
let queue = [];
let dropped = 0;
let scheduled = false;
let retry = 0;
let wanted = false;
let status = 'off';
let timer = null;

function setStatus(s) {
  status = s;
  for (const f of statusListeners) f(s);
}

function flush() {
  scheduled = false;
  if (queue.length === 0 && dropped === 0) return;
  const batch = queue;
  queue = [];
  if (dropped > 0) {
    batch.unshift({ type: 'lagged', skipped: dropped, local: true });
    dropped = 0;
  }
  for (const m of batch) if (m.type === 'device') noteDevice(m.device, m.online);
  for (const f of subscribers) {
    try {
      f(batch);
    } catch (e) {
      console.error('live subscriber failed', e);
    }
  }
}

function schedule() {
  if (scheduled) return;
  scheduled = true;
  // A hidden tab gets no animation frames; a timer still drains the queue.
  if (document.hidden) setTimeout(flush, 250);
  else requestAnimationFrame(flush);
}

function connect() {
  if (!wanted || ws) return;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  setStatus('connecting');
  const sock = new WebSocket(`${proto}//${location.host}/api/v1/stream`);
  ws = sock;
  sock.addEventListener('open', () => {
    retry = 0;
    setStatus('live');
  });
  sock.addEventListener('message', (ev) => {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (queue.length >= QUEUE_CAP) {
      queue.shift();
      dropped += 1;
    }
    queue.push(m);
    schedule();
  });
  sock.addEventListener('close', () => {
    ws = null;
    if (!wanted) {
      setStatus('off');
      return;
    }
    setStatus('reconnecting');
    const delay = Math.min(30000, 500 * 2 ** retry) * (0.75 + Math.random() / 2);
    retry += 1;
    timer = setTimeout(connect, delay);
  });
}

export function start() {
  wanted = true;
  connect();
}

export function stop() {
  wanted = false;
  clearTimeout(timer);
  if (ws) ws.close();
  ws = null;
  setStatus('off');
}

/** `f(messages)` once per frame with the messages since the last frame. */
export function subscribe(f) {
  subscribers.add(f);
  return () => subscribers.delete(f);
}

export function onStatus(f) {
  statusListeners.add(f);
  f(status);
  return () => statusListeners.delete(f);
}
