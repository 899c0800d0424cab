// range.js: the time range picker in the header. It writes the range into the current page's hash
// (range=<preset>, or from/to in Unix nanoseconds for a custom range) and shows the hash's range.
import { current, go, msToNs, nsToMs, PRESETS } from './route.js';

const preset = () => document.getElementById('range-preset');
const custom = () => document.getElementById('range-custom');
const fromInput = () => document.getElementById('range-from');
const toInput = () => document.getElementById('range-to');

// localInput spells milliseconds the way <input type="datetime-local"> wants them (local time).
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// show reflects params' range in the picker.
export function show(params) {
  const from = params.get('from');
  const to = params.get('to');
  if (from && to) {
    preset().value = 'custom';
    custom().hidden = false;
    fromInput().value = localInput(nsToMs(from));
    toInput().value = localInput(nsToMs(to));
  } else {
    preset().value = PRESETS[params.get('range')] ? params.get('range') : '1h';
    custom().hidden = true;
  }
}

function apply(params) {
  const { page } = current();
  const p = current().params;
  for (const k of ['range', 'from', 'to', 'cursor']) p.delete(k);
  for (const [k, v] of Object.entries(params)) p.set(k, v);
  go(page, p);
}

export function init() {
  preset().addEventListener('change', () => {
    if (preset().value === 'custom') {
      // Start the custom range from the preset it replaces, so Apply alone changes nothing.
      const now = Date.now();
      fromInput().value = localInput(now - 3600e3);
      toInput().value = localInput(now);
      custom().hidden = false;
      return;
    }
    apply({ range: preset().value });
  });
  document.getElementById('range').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const from = Date.parse(fromInput().value);
    const to = Date.parse(toInput().value);
    if (Number.isNaN(from) || Number.isNaN(to) || from > to) {
      fromInput().setCustomValidity('from must be a time before to');
      fromInput().reportValidity();
      return;
    }
    fromInput().setCustomValidity('');
    apply({ from: msToNs(from), to: msToNs(to) });
  });
}
