// The pages' router: one shell, views chosen by the location's hash, so any view can be
// bookmarked and reloaded. Each view module exports `render(main, params)` and may return a
// function that stops what it started (event streams, timers) when the view is left.
import { can, session } from './session.js';
import { clear, h } from './ui.js';

const isCrew = Boolean(session.crew_id);

const routes = [
  { pattern: /^\/$/, view: () => import('./views/control.js') },
  { pattern: /^\/devices\/([0-9a-f-]{36})$/, view: () => import('./views/device.js'), names: ['id'] },
  { pattern: /^\/crew$/, view: () => import('./views/crew.js'), screen: 'list' },
  { pattern: /^\/crew\/work-orders\/([0-9a-f-]{36})$/, view: () => import('./views/crew.js'), names: ['id'], screen: 'work-order' },
  { pattern: /^\/crew\/route$/, view: () => import('./views/crew.js'), screen: 'route' },
  { pattern: /^\/settings$/, view: () => import('./views/settings.js') },
];

const links = [
  { href: '#/', label: 'Control room', show: true },
  { href: '#/crew', label: 'My work orders', show: isCrew },
  { href: '#/crew/route', label: 'My route', show: isCrew },
  // Other keys may read the settings at #/settings; only admins are led there.
  { href: '#/settings', label: 'City settings', show: can('manage_tenant') },
];

function drawNav() {
  const nav = document.getElementById('nav');
  clear(nav);
  const current = window.location.hash || '#/';
  nav.append(h('ul', {}, links.filter((link) => link.show).map((link) => h('li', {},
    h('a', { href: link.href, 'aria-current': current === link.href ? 'page' : undefined }, link.label)))));
}

let leave = null;
let turn = 0;
let shownPath = null;

async function show() {
  const path = (window.location.hash || '#/').slice(1) || '/';
  // A hash changed while the page was still loading is seen twice (the first show and the
  // queued hashchange): drawing it again would only redo the same view.
  if (path === shownPath) return;
  shownPath = path;
  if (path === '/' && isCrew && !sessionStorage.getItem('fleet.crew.chose-control')) {
    // A crew's tablet opens on the crew's own work; the control room is one tap away.
    sessionStorage.setItem('fleet.crew.chose-control', '1');
    window.location.replace('#/crew');
    return;
  }
  const mine = ++turn;
  if (leave) {
    try { leave(); } catch (error) { console.error(error); }
    leave = null;
  }
  drawNav();
  // Each view draws into its own box: a view still loading when the next one is chosen draws
  // into a box no longer on the page, never beside the new view.
  const box = h('div', { className: 'view' });
  document.getElementById('main').replaceChildren(box);
  const route = routes.find((r) => r.pattern.test(path));
  if (!route) {
    box.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the control room')));
    return;
  }
  const match = path.match(route.pattern);
  const params = { screen: route.screen };
  (route.names || []).forEach((name, i) => { params[name] = match[i + 1]; });
  document.body.dataset.view = route.screen ? `crew-${route.screen}` : path.split('/')[1] || 'control';
  const module = await route.view();
  if (mine !== turn) return;
  const stop = (await module.render(box, params)) || null;
  if (mine !== turn) {
    // Left while it was drawing: stop what it started (streams, timers) at once.
    if (stop) stop();
    return;
  }
  leave = stop;
}

// A view that fails to draw (on the first load or any later hash change) says so in place
// rather than leaving an empty page behind.
function showOrSay() {
  show().catch((error) => {
    console.error(error);
    document.getElementById('main').append(h('p', { role: 'alert' }, `This view failed to load: ${error.message}`));
  });
}

// The skip link's target is an id, but the hash is the router's: following it would leave the
// view for "#main" (not found). It moves the focus instead, and the view stays.
document.querySelector('.skip-link')?.addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('main').focus();
});

window.addEventListener('hashchange', showOrSay);
showOrSay();
