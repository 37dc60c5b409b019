// Charts on uPlot: a time series (events/s, late events) and bars (counts per window). Each
// follows its container's width, so the page reads at 1280 px and on a narrow window alike.
import uPlot from './vendor/uPlot.esm.js';
import { num } from './format.js';

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
    axes: [{}, { values: (_, ticks) => ticks.map((t) => num(t)), size: 60 }],
    scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
  };
  const plot = new uPlot(opts, [[], ...series.map(() => [])], el);
  const destroy = follow(el, plot);
  return { update: (xs, ...ys) => plot.setData([xs, ...ys]), destroy };
}

/** Bars at window starts: {update(startsSeconds, values), destroy()}. */
export function barChart(el, title, label, unit, height = 220) {
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
    axes: [{}, { values: (_, ticks) => ticks.map((t) => num(t)), size: 60 }],
    scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
  };
  const plot = new uPlot(opts, [[], []], el);
  const destroy = follow(el, plot);
  return { update: (xs, ys) => plot.setData([xs, ys]), destroy };
}
