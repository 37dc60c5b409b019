// Numbers with thousands separators and units; times in the browser's zone, UTC on hover.
import { h } from './dom.js';

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** The watermark of `{"time": "max"}`: end of stream. */
export const END_OF_STREAM = 9223372036854775807;

/** 12,345 (or – for null). */
export function num(n) {
  return n === null || n === undefined ? '–' : integer.format(n);
}

/** 1,234.5 events/s */
export function rate(perSecond) {
  return perSecond === null || perSecond === undefined ? '–' : `${decimal.format(perSecond)} events/s`;
}

/** A duration in milliseconds, in the largest unit that keeps it readable. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  const abs = Math.abs(ms);
  if (abs < 1000) return `${integer.format(ms)} ms`;
  if (abs < 60_000) return `${decimal.format(ms / 1000)} s`;
  if (abs < 3_600_000) return `${decimal.format(ms / 60_000)} min`;
  if (abs < 86_400_000) return `${decimal.format(ms / 3_600_000)} h`;
  return `${integer.format(ms / 86_400_000)} d`;
}

/** 1.5 MiB */
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? decimal.format(v) : integer.format(v)} ${units[i]}`;
}

const local = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});

/** A <time> in the browser's zone with the UTC instant on hover; `t` is epoch ms or RFC 3339. */
export function time(t) {
  if (t === null || t === undefined) return '–';
  if (t === END_OF_STREAM) return h('span', { title: 'watermark set to "max"' }, 'end of stream');
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return h('time', { datetime: d.toISOString(), title: `${d.toISOString()} (UTC)` }, local.format(d));
}

/** How far the watermark is behind the clock. */
export function lag(watermark, nowMs = Date.now()) {
  if (watermark === null || watermark === undefined) return '–';
  if (watermark === END_OF_STREAM) return '–';
  return duration(Math.max(0, nowMs - watermark));
}
