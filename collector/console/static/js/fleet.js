// fleet.js: the fleet's health. The exporters the collector has heard from (/api/v1/exporters: the
// transport each uses and why, their drops and lag) and the collector's own ingest rates
// (/api/v1/ingest). Both refresh every 10 s while the page is open.
import { getJSON } from './api.js';
import { el, fmtBytes, fmtRFC3339, fmtRate, status } from './format.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 10000;
let timer = null;
let seq = 0;

// stop ends the refresh when the user leaves the page. Bumping seq also retires a fetch still in
// flight, which would otherwise schedule the next refresh on whatever page the user went to.
export function stop() {
  clearTimeout(timer);
  timer = null;
  seq++;
}

export async function render() {
  stop();
  const table = $('fleet-exporters');
  const mine = ++seq;
  const [ex, ing] = await Promise.allSettled([getJSON('/api/v1/exporters'), getJSON('/api/v1/ingest')]);
  if (mine !== seq) return;
  const problems = [];
  if (ex.status === 'fulfilled') {
    table.tBodies[0].replaceChildren(...(ex.value.exporters || []).map(exporterRow));
  } else {
    table.tBodies[0].replaceChildren();
    problems.push(`exporters: ${explain(ex.reason)}`);
  }
  if (ing.status === 'fulfilled') {
    $('fleet-ingest').replaceChildren(...ingestCards(ing.value));
  } else {
    $('fleet-ingest').replaceChildren();
    problems.push(`ingest: ${explain(ing.reason)}`);
  }
  const n = ex.status === 'fulfilled' ? (ex.value.exporters || []).length : 0;
  status($('fleet-status'), problems.length ? problems.join('; ') : `${n} exporters seen. Refreshes every ${REFRESH_MS / 1000} s.`, problems.length > 0);
  table.dataset.ready = '1';
  timer = setTimeout(() => render(), REFRESH_MS);
}

function explain(err) {
  return err.status === 404 ? 'this collector does not serve it' : err.message;
}

function exporterRow(x) {
  const w = x.workload || {};
  const drops = Object.entries(x.drops || {}).filter(([, n]) => n > 0);
  const td = (v, cls) => el('td', cls ? { class: cls } : {}, v);
  return el('tr', { 'data-id': x.id, 'data-transport': x.transport },
    td(x.id), td(x.host || ''), td(w.name ? `${w.namespace ? w.namespace + '/' : ''}${w.name}` : ''),
    td(x.transport), td(x.transport_reason || ''), td(x.received_over || ''),
    td(fmtRFC3339(x.started_at)), td(fmtRFC3339(x.first_seen)), td(fmtRFC3339(x.last_seen)),
    td(x.batches, 'num'), td(x.records, 'num'), td(x.lost_batches, x.lost_batches > 0 ? 'num bad' : 'num'),
    td(drops.length ? drops.map(([r, n]) => `${r}: ${n}`).join(', ') : 'none', drops.length ? 'bad' : ''),
    td(x.queued_records, 'num'), td(ms(x.lag_ms), 'num'), td(ms(x.export_lag_ms), 'num'));
}

const ms = (v) => (v === undefined || v === null ? '' : v >= 1000 ? (v / 1000).toFixed(1) + ' s' : Math.round(v) + ' ms');

function ingestCards(s) {
  const card = (label, value, title) => el('div', { class: 'card', title: title || '' }, el('b', {}, value), label);
  const cards = [
    card('records/s', fmtRate(s.records_per_second), `over the last ${s.window_seconds} s`),
    card('batches/s', fmtRate(s.batches_per_second)),
    card('refused/s', fmtRate(s.refused_per_second)),
    card('queued records', `${s.queue_records} / ${s.queue_capacity}`),
    card('parked records', String(s.parked_records), 'waiting for their remote address to be attributed'),
    card('exporters', `${s.exporters} (${s.exporters_stale} stale)`),
  ];
  for (const [t, r] of Object.entries(s.by_transport || {})) {
    cards.push(card(`${t}: records/s`, fmtRate(r.records_per_second), `${fmtRate(r.batches_per_second)} batches/s, ${fmtBytes(r.bytes_per_second)}/s`));
  }
  return cards;
}
