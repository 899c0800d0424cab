// main.js: the console's entry point. A hash router: each page is a module with init() (wire its
// controls once) and render(params) (load and draw for the hash's parameters).
import * as flows from './flows.js';
import * as fleet from './fleet.js';
import * as lookup from './lookup.js';
import * as map from './map.js';
import * as range from './range.js';
import { current } from './route.js';

const pages = { map, flows, lookup, fleet };

function route() {
  const { page, params } = current();
  for (const name of Object.keys(pages)) document.getElementById(`page-${name}`).hidden = name !== page;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.route === page);
  // The time range applies to the map and the flows only.
  document.getElementById('range').hidden = page !== 'map' && page !== 'flows';
  if (page !== 'fleet') fleet.stop();
  range.show(params);
  document.body.dataset.page = page;
  pages[page].render(params);
}

range.init();
for (const p of Object.values(pages)) p.init?.();
window.addEventListener('hashchange', route);
route();
