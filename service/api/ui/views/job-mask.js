/* A ChildTuning-D job's mask (GET .../mask, masks/summary.json): the kept fraction per layer
 * and, once the job has finished, the audit of its weights. */

import { append, clear, h, headRow, tableWrap } from '../lib/dom.js';
import { fmtInt, fmtNum, fmtPct } from '../lib/format.js';

function maskGroup(name) {
  const layer = /(?:^|\.)layers?\.(\d+)\./.exec(name);
  if (layer) return { key: `layer ${layer[1]}`, order: 1 + Number(layer[1]) };
  if (/embeddings?/.test(name)) return { key: 'embeddings', order: 0 };
  return { key: 'head', order: 1e9 };
}

/* The masked tensors summed per group (layer.N, embeddings, head). */
function groupsOf(summary) {
  const auditRows = (summary.audit && summary.audit.params) || {};
  const groups = new Map();
  for (const [name, info] of Object.entries(summary.params || {})) {
    const { key, order } = maskGroup(name);
    const g = groups.get(key) || { key, order, names: 0, kept: 0, numel: 0, changed: 0, outside: 0, audited: false };
    g.names += 1;
    g.kept += info.kept || 0;
    g.numel += info.numel || 0;
    const row = auditRows[name];
    if (row) {
      g.audited = true;
      g.changed += row.changed || 0;
      g.outside += row.changed_outside || 0;
    }
    groups.set(key, g);
  }
  return Array.from(groups.values()).sort((a, b) => a.order - b.order);
}

export function renderMask(body, summary) {
  clear(body);
  const audit = summary.audit || null;
  append(body, h('p', {},
    `Mode ${summary.mode}, reserve_p ${fmtNum(summary.reserve_p)}: kept ${fmtPct(summary.kept_fraction)} `
    + `of ${fmtInt(summary.num_elements)} elements (threshold ${fmtNum(summary.threshold)}).`));
  const head = ['Group', 'Tensors', 'Kept', 'Elements', 'Kept fraction'];
  if (audit) head.push('Changed', 'Changed outside the child');
  const rows = groupsOf(summary).map((g) => {
    const fraction = g.numel ? g.kept / g.numel : 0;
    const bar = h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'bar-fill' }));
    bar.firstChild.style.width = `${(100 * fraction).toFixed(1)}%`;
    const cells = [
      h('th', { scope: 'row', text: g.key }), h('td', { text: String(g.names) }), h('td', { text: fmtInt(g.kept) }),
      h('td', { text: fmtInt(g.numel) }), h('td', { class: 'bar-cell' }, bar, h('span', { text: fmtPct(fraction) })),
    ];
    if (audit) {
      cells.push(h('td', { text: g.audited ? `${fmtInt(g.changed)} (${fmtPct(g.numel ? g.changed / g.numel : 0)})` : '—' }));
      cells.push(h('td', { text: g.audited ? fmtInt(g.outside) : '—' }));
    }
    return h('tr', { 'data-group': g.key }, cells);
  });
  append(body, tableWrap('Kept fraction per layer', h('table', { id: 'mask-table' },
    h('caption', { text: 'Kept fraction per layer (tensors grouped by layer.N, embeddings, head)' }),
    headRow(head),
    h('tbody', {}, rows))));
  if (audit) {
    const verdict = audit.child_only ? 'only the child moved' : 'elements outside the child moved (weight decay or a non-strict run)';
    append(body, h('p', { id: 'mask-audit' },
      `Audit of the final weights: changed ${fmtPct(audit.changed_fraction)}, kept ${fmtPct(audit.kept_fraction)}, `
      + `${fmtInt(audit.changed_outside)} changed outside the child: ${verdict}.`));
  } else {
    append(body, h('p', { class: 'muted', id: 'mask-audit', text: 'Audit of the weights: written when the job finishes.' }));
  }
}
