/* Curves by step with uPlot (vendor/uplot, loaded as a classic script before the modules). */

import { state } from './state.js';

// Distinct colours, and a dash pattern each, so curves differ without colour too.
const PALETTE = ['#1f5f8b', '#c0392b', '#2e7d32', '#8e44ad', '#b9770e', '#00838f', '#6d4c41', '#455a64'];
const DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4], [12, 6], [1, 4], [6, 2, 2, 2]];

// Tick spacings of the step axis: whole steps only.
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];

const HEIGHT = 240;

/* A chart in el with one curve per series ({label}), x the step; resized with el, destroyed
 * with the view, and kept as state.charts[name] (the browser tests read its data). */
export function makeChart(view, el, name, yLabel, series) {
  const width = () => Math.max(260, Math.floor(el.clientWidth || 600));
  const options = {
    width: width(),
    height: HEIGHT,
    scales: { x: { time: false } },
    axes: [{ label: 'step', incrs: STEP_INCRS }, { label: yLabel, size: 60 }],
    series: [{ label: 'step' }].concat(series.map((s, i) => ({
      label: s.label,
      stroke: PALETTE[i % PALETTE.length],
      dash: DASHES[i % DASHES.length],
      width: 2,
      spanGaps: true,
      points: { size: 5 },
    }))),
  };
  const data = [[]].concat(series.map(() => []));
  const chart = new window.uPlot(options, data, el);
  const observer = new ResizeObserver(() => chart.setSize({ width: width(), height: HEIGHT }));
  observer.observe(el);
  view.cleanups.push(() => { observer.disconnect(); chart.destroy(); });
  state.charts[name] = chart;
  return chart;
}
