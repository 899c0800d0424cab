// lookup.js: who owned an IP at a time (sonar's /api/v1/lookup), and every range the ownership index
// holds for it (/api/v1/ranges), so the answer can be checked against its history.
import { getJSON } from './api.js';
import { el, fmtTime, status } from './format.js';
import { go } from './route.js';

const $ = (id) => document.getElementById(id);
let seq = 0;

export function init() {
  $('lookup-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(ev.target);
    go('lookup', { ip: String(data.get('ip')).trim(), at: String(data.get('at')).trim() });
  });
}

export async function render(params) {
  const form = $('lookup-form');
  const ip = params.get('ip') || '';
  form.elements.ip.value = ip;
  form.elements.at.value = params.get('at') || '';
  const box = $('lookup-answer');
  delete box.dataset.ready;
  if (!ip) {
    box.replaceChildren();
    $('lookup-ranges').tBodies[0].replaceChildren();
    $('lookup-conflicts').tBodies[0].replaceChildren();
    status($('lookup-status'), 'Enter an IP address, and optionally a time (default now).');
    return;
  }
  status($('lookup-status'), 'Looking up…');
  const mine = ++seq;
  let answer, ranges;
  try {
    [answer, ranges] = await Promise.all([
      getJSON('/api/v1/lookup', { ip, at: params.get('at') }),
      getJSON('/api/v1/ranges', { ip }),
    ]);
  } catch (err) {
    if (mine === seq) {
      box.replaceChildren();
      status($('lookup-status'), `Lookup failed: ${err.message}`, true);
      box.dataset.ready = '1';
    }
    return;
  }
  if (mine !== seq) return;
  box.replaceChildren(answerBox(answer));
  $('lookup-ranges').tBodies[0].replaceChildren(...(ranges.ranges || []).map(rangeRow));
  $('lookup-conflicts').tBodies[0].replaceChildren(...(ranges.conflicts || []).map(conflictRow));
  status($('lookup-status'), `${(ranges.ranges || []).length} ranges, ${(ranges.conflicts || []).length} conflicting claims held for ${ranges.ip}.`);
  box.dataset.ready = '1';
}

function owner(o) {
  return [o.namespace ? `${o.namespace}/${o.name}` : o.name, o.pod && `pod ${o.pod}`, o.node && `node ${o.node}`, o.cluster && `cluster ${o.cluster}`]
    .filter(Boolean).join(', ');
}

function answerBox(a) {
  const at = fmtTime(a.at);
  const children = [el('div', {}, el('b', { class: 'status-word' }, a.status), ` ${a.ip} at ${at}`)];
  if (a.status === 'OWNER') {
    children.push(el('div', { class: 'owner', 'data-owner': a.range.owner.name, 'data-namespace': a.range.owner.namespace || '' },
      `Owner: ${owner(a.range.owner)}`),
    el('div', { class: 'muted' }, `${a.range.evidence} evidence, held ${fmtTime(a.range.start)} – ${fmtTime(a.range.end)}, last seen ${fmtTime(a.range.last_seen)}`));
  } else if (a.status === 'CONFLICT') {
    children.push(el('div', {}, 'Claims disagree: ' + a.conflicting.map((r) => owner(r.owner)).join(' vs ')));
  } else {
    children.push(el('div', { class: 'muted' }, 'No evidence covers this time: flows to it stay unattributed.'));
  }
  return el('div', { class: `answer ${a.status}`, 'data-status': a.status }, ...children);
}

function rangeRow(r) {
  return el('tr', { 'data-owner': r.owner.name || '', 'data-evidence': r.evidence },
    el('td', {}, fmtTime(r.start)), el('td', {}, fmtTime(r.end)), el('td', {}, fmtTime(r.last_seen)),
    el('td', {}, r.owner.name || ''), el('td', {}, r.owner.namespace || ''), el('td', {}, r.owner.pod || ''),
    el('td', {}, r.owner.cluster || ''), el('td', {}, r.evidence));
}

function conflictRow(r) {
  return el('tr', { 'data-owner': r.owner.name || '' },
    el('td', {}, fmtTime(r.start)), el('td', {}, fmtTime(r.end)), el('td', {}, r.owner.name || ''),
    el('td', {}, r.owner.namespace || ''), el('td', {}, r.evidence));
}
