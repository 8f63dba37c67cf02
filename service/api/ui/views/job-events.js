/* A job's events as the timeline's text. */

import { fmtBytes, fmtInt, fmtNum, fmtPct, metricName } from '../lib/format.js';

/* When a samples event's answers were given. */
export function sampleStepText(e) {
  return e.step === 0 ? 'before training (step 0)' : `at step ${e.step}`;
}

/* One split of a causal-lm job's data event: `train 80 of 81 rows (2 truncated, 1 dropped)`. */
function dataSplitText(name, c) {
  if (!c) return `${name} —`;
  const rows = c.kept === c.rows || c.rows === undefined ? `${fmtInt(c.kept)} rows` : `${fmtInt(c.kept)} of ${fmtInt(c.rows)} rows`;
  const dropped = (c.dropped_overlong || 0) + (c.dropped_no_target || 0);
  const notes = [c.truncated ? `${fmtInt(c.truncated)} truncated` : null, dropped ? `${fmtInt(dropped)} dropped` : null].filter(Boolean);
  return `${name} ${rows}${notes.length ? ` (${notes.join(', ')})` : ''}`;
}

export function describeEvent(e) {
  switch (e.type) {
    case 'started':
      return `started: ${e.world_size} rank(s), ZeRO ${e.zero_stage}, ${e.precision} on ${e.device}, ${e.total_steps} steps`
        + (e.resumed_from ? `, resumed from step ${e.resumed_from}` : '');
    case 'phase': return `phase: ${e.phase}`;
    case 'fisher': return `Fisher pass: kept ${fmtPct(e.kept_fraction)} of ${fmtInt(e.num_elements)} elements`;
    case 'checkpoint': return `checkpoint ${e.name} at step ${e.step}`;
    case 'best': return `new best ${metricName(e.main_metric)} ${fmtNum(e.main_value)} at step ${e.step}`;
    case 'data':
      return `data: ${dataSplitText('train', e.train)}, ${dataSplitText('eval', e.eval)}, max ${e.max_seq_length} tokens`
        + ` (overlong: ${e.overlong}), chat template ${e.chat_template ? 'on' : 'off'}`;
    case 'samples': {
      const n = (e.samples || []).length;
      return `samples ${sampleStepText(e)}: ${n} answer${n === 1 ? '' : 's'}`;
    }
    case 'early_stopped': return `early stop at step ${e.step} (best step ${e.best_step})`;
    case 'resumed': return `resumed from step ${e.from_step}`;
    case 'gang': return `nodes: ${e.message}`;
    case 'model': return `saved ${e.which} (step ${e.step})`;
    case 'audit': return `audit: changed ${fmtPct(e.changed_fraction)}, ${fmtInt(e.changed_outside)} outside the child`;
    case 'delta': return `delta written: ${fmtBytes(e.delta_bytes)} (model ${fmtBytes(e.model_bytes)})`;
    case 'error': return `error${e.step !== null && e.step !== undefined ? ` at step ${e.step}` : ''}: ${e.message}`;
    case 'finished': return `finished: ${e.status} at step ${e.step}${e.error ? ` (${e.error})` : ''}`;
    default: return e.type;
  }
}
