/* Numbers, sizes, durations, times and metric names as text. */

import { h } from './dom.js';

export function fmtNum(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (typeof value !== 'number') return String(value);
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(2);
  const text = value.toFixed(digits === undefined ? 4 : digits);
  return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
}

export function fmtPct(fraction) {
  return fraction === null || fraction === undefined ? '—' : `${(100 * fraction).toFixed(1)}%`;
}

export function fmtInt(value) {
  return value === null || value === undefined ? '—' : Number(value).toLocaleString('en');
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function fmtTime(unix, withDate) {
  if (!unix) return '—';
  const d = new Date(unix * 1000);
  return withDate ? d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : d.toLocaleTimeString();
}

/* A <time> element; withDate: the date too, unless it is today. */
export function timeEl(unix, withDate) {
  if (!unix) return '—';
  const date = withDate && new Date(unix * 1000).toDateString() !== new Date().toDateString();
  return h('time', { datetime: new Date(unix * 1000).toISOString(), text: fmtTime(unix, date) });
}

/* A metric key as shown: eval_accuracy -> accuracy. */
export function metricName(key) {
  return (key || 'metric').replace(/^eval_/, '');
}

/* An eval record's main metric: "accuracy 0.75 (step 40)". */
export function fmtMetric(record) {
  if (!record) return '—';
  return `${metricName(record.main_metric)} ${fmtNum(record.main_value)} (step ${record.step})`;
}
