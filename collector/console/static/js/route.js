// route.js: the console's state lives in the URL's hash (#/page?param=value...), so every view,
// filter and time range can be bookmarked, shared, and reached again with the back button.

import { query } from './api.js';

export const PAGES = ['map', 'flows', 'lookup', 'fleet'];

// current parses location.hash into its page and parameters.
export function current() {
  const h = location.hash.replace(/^#\/?/, '');
  const [page, qs] = h.split('?', 2);
  return { page: PAGES.includes(page) ? page : 'map', params: new URLSearchParams(qs || '') };
}

// go navigates to page with params (an object or URLSearchParams), dropping empty values.
export function go(page, params) {
  location.hash = `#/${page}${query(params instanceof URLSearchParams ? Object.fromEntries(params) : params)}`;
}

// Time range presets, in milliseconds.
export const PRESETS = { '15m': 15 * 60e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3 };

// msToNs spells a millisecond time as the API's Unix nanoseconds. A string, because nanoseconds
// since 1970 do not fit a JavaScript number exactly.
export function msToNs(ms) {
  return String(Math.round(ms)) + '000000';
}

// windowOf resolves the range a page's params name to absolute Unix-nanosecond strings: a custom
// from/to as given, or a preset (default 1h) ending now. Resolving once per render lets the map hand
// the very window its edges were summed over to the flow explorer when an edge is clicked.
export function windowOf(params) {
  const from = params.get('from');
  const to = params.get('to');
  if (from && to) return { from, to, preset: 'custom' };
  const preset = PRESETS[params.get('range')] ? params.get('range') : '1h';
  const now = Date.now();
  return { from: msToNs(now - PRESETS[preset]), to: msToNs(now), preset };
}

// nsToMs converts an API nanosecond string back to milliseconds for display and date inputs.
export function nsToMs(ns) {
  return /^\d{7,}$/.test(ns) ? Number(ns.slice(0, -6)) : Date.parse(ns);
}
