// Charts on uPlot: a time series (events/s, late events) and bars (counts per window). Each
// follows its container's width, so the page reads at 1280 px and on a narrow window alike.
import uPlot from './vendor/uPlot.esm.js';
import { num } from './format.js';

const tick = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const tickValues = (_, ticks) => ticks.map((t) => tick.format(t));
/** Whole-number steps for counts (no 0.5 events). */
const COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700'];

function widthOf(el) {
  return Math.max(240, Math.floor(el.clientWidth || 600));
}

function follow(el, plot) {
  const observer = new ResizeObserver(() => plot.setSize({ width: widthOf(el), height: plot.height }));
  observer.observe(el);
  return () => {
    observer.disconnect();
    plot.destroy();
  };
}

/**
 * A line chart over time. `series` is [{label, unit}]; returns {update(xs, ...ys), destroy()},
 * with xs in epoch seconds.
 */
export function timeChart(el, title, series, height = 180) {
  const opts = {
    title,
    width: widthOf(el),
    height,
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        value: (_, v) => (v === null || v === undefined ? '–' : `${num(v)} ${s.unit}`),
      })),
    ],
    axes: [{}, { values: tickValues, size: 60 }],
    scales: {
      // At least the last minute, so that the axis reads in seconds from the first samples on.
      x: { range: (_, min, max) => [Math.min(min ?? max, (max ?? 0) - 60), max] },
      y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] },
    },
  };
  const plot = new uPlot(opts, [[], ...series.map(() => [])], el);
  const destroy = follow(el, plot);
  return { update: (xs, ...ys) => plot.setData([xs, ...ys]), destroy };
}

/**
 * Bars, one per window, drawn at its middle: {update(startsSeconds, values), destroy()};
 * `widthS` is the window size in seconds (the x range is padded by half of it on both sides).
 */
export function barChart(el, title, label, unit, widthS, height = 220) {
  const opts = {
    title,
    width: widthOf(el),
    height,
    series: [
      {},
      {
        label,
        fill: 'rgba(31, 111, 235, 0.45)',
        stroke: COLORS[0],
        paths: uPlot.paths.bars({ size: [0.8, 80] }),
        points: { show: false },
        value: (_, v) => (v === null || v === undefined ? '–' : `${num(v)} ${unit}`),
      },
    ],
    axes: [{}, { values: tickValues, size: 60, incrs: unit === 'events' ? COUNT_STEPS : undefined }],
    scales: {
      x: { time: true, range: (_, min, max) => [(min ?? 0) - widthS / 2, (max ?? 0) + widthS / 2] },
      y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] },
    },
  };
  const plot = new uPlot(opts, [[], []], el);
  const destroy = follow(el, plot);
  return { update: (xs, ys) => plot.setData([xs.map((x) => x + widthS / 2), ys]), destroy };
}
