// A stacked bar chart of alert counts per time bucket and level, drawn as
// SVG elements (no chart library, nothing parsed from strings).

import { s, h } from './dom.js';
import { LEVELS, time, num } from './format.js';

/**
 * buckets: [{start_ms, level, count}] from /alerts/counts.
 * Draws every bucket from `since` to `until` (empty ones as gaps).
 */
export function stackedBars(buckets, { bucketMs, since, until, width = 900, height = 220 }) {
  const start = Math.floor(since / bucketMs) * bucketMs;
  const n = Math.max(1, Math.ceil((until - start) / bucketMs));
  const cols = Array.from({ length: n }, (_, i) => ({ start: start + i * bucketMs, counts: {} }));
  for (const b of buckets) {
    const i = Math.floor((b.start_ms - start) / bucketMs);
    if (i >= 0 && i < n) cols[i].counts[b.level] = (cols[i].counts[b.level] || 0) + b.count;
  }
  const totals = cols.map((c) => Object.values(c.counts).reduce((a, b) => a + b, 0));
  const max = Math.max(1, ...totals);
  const padL = 48;
  const padB = 22;
  const padT = 8;
  const plotW = width - padL - 8;
  const plotH = height - padB - padT;
  const bw = plotW / n;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': 'Alerts over time by level' });
  // Grid lines and y labels at 0, 1/2, max.
  for (const frac of [0, 0.5, 1]) {
    const y = padT + plotH - frac * plotH;
    svg.appendChild(s('line', { x1: padL, x2: width - 8, y1: y, y2: y, class: 'grid' }));
    svg.appendChild(s('text', { x: padL - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, num(Math.round(max * frac))));
  }
  cols.forEach((c, i) => {
    let y = padT + plotH;
    const x = padL + i * bw;
    const g = s('g', { class: 'bar' });
    for (const level of LEVELS) {
      const v = c.counts[level] || 0;
      if (!v) continue;
      const bh = (v / max) * plotH;
      y -= bh;
      g.appendChild(s('rect', { x: x + 0.5, y, width: Math.max(1, bw - 1), height: bh, class: `lv-${level}` }));
    }
    g.appendChild(s('rect', { x, y: padT, width: bw, height: plotH, class: 'hit' }));
    g.appendChild(s('title', {}, `${time(c.start)}: ${num(totals[i])} alerts${LEVELS.filter((l) => c.counts[l]).map((l) => `\n${l}: ${num(c.counts[l])}`).join('')}`));
    svg.appendChild(g);
  });
  // Labels every `step` buckets, so they are evenly spaced; the last one
  // ends at the plot's edge instead of being clipped.
  const step = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += step) {
    const d = new Date(cols[i].start);
    const label = bucketMs >= 86400e3
      ? `${d.getMonth() + 1}/${d.getDate()}`
      : `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, '0')}:00`;
    const last = i + step >= n && n > 1;
    const x = last ? Math.min(width - 2, padL + i * bw + bw) : padL + i * bw + bw / 2;
    svg.appendChild(s('text', { x, y: height - 6, class: 'axis', 'text-anchor': last ? 'end' : 'middle' }, label));
  }
  return svg;
}

export function legend() {
  return h('div', { class: 'legend' }, LEVELS.map((l) => h('span', { class: 'legend-item' }, h('span', { class: `swatch lv-${l}` }), l)));
}

/** Horizontal bars: rows of [label node, value, href, class]. */
export function hbars(rows) {
  const max = Math.max(1, ...rows.map((r) => r[1]));
  return h('ul', { class: 'hbars' }, rows.map(([label, value, href, cls]) => {
    const fill = h('span', { class: ['hbar-fill', cls] });
    fill.style.width = `${(100 * value) / max}%`;
    return h('li', {},
      h('a', { href, class: 'hbar' }, h('span', { class: 'hbar-label' }, label), h('span', { class: 'hbar-track' }, fill), h('span', { class: 'hbar-value' }, num(value))));
  }));
}
