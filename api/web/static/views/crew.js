// The crews' tablet view (issue 15): my work orders by distance, a work order's page, my route.
// What it last saw is kept on the tablet, changes made offline wait in an outbox, and it
// catches up through the sync API when the network is back (views/crew-store.js).
import { session } from '../session.js';
import { clear, h, setConnection } from '../ui.js';
import * as list from './crew-list.js';
import * as order from './crew-order.js';
import * as route from './crew-route.js';
import * as store from './crew-store.js';
import { hourMinute, shownSince } from './crew-common.js';

const screens = { list, 'work-order': order, route };

function noCrew(main) {
  main.append(h('section', { className: 'panel crew-no-crew', testid: 'crew-no-crew' },
    h('h1', {}, 'Crew tablets'),
    h('p', {}, `This view shows a crew's own work orders and route, so it needs a crew key. `
      + `You are signed in with a key of the ${session.role} role, which belongs to no crew.`),
    h('p', {}, 'Ask an admin for a key of your crew (fleet apikey create --role crew --crew NAME), '
      + 'or go back to the control room.'),
    h('p', {}, h('a', { href: '#/', className: 'button' }, 'Open the control room'))));
}

function drawBanner(banner) {
  const waiting = store.state.outbox.length;
  const changes = `${waiting} change${waiting === 1 ? '' : 's'} waiting`;
  clear(banner);
  if (!store.link.online) {
    banner.dataset.state = 'offline';
    banner.append(h('strong', {}, 'Offline'), ' — ', h('span', { testid: 'outbox-count' }, changes),
      h('span', { className: 'crew-banner-detail' }, `. Showing ${shownSince()}; changes go out when the network is back.`));
  } else if (waiting) {
    banner.dataset.state = 'sending';
    banner.append(h('strong', {}, 'Sending'), ' — ', h('span', { testid: 'outbox-count' }, changes));
  } else {
    banner.dataset.state = 'ok';
  }
  setConnection(store.link.online ? 'live' : 'offline');
}

function drawConflicts(region) {
  clear(region);
  store.state.conflicts.forEach((conflict, index) => {
    region.append(h('div', { className: 'crew-conflict', role: 'alert', testid: 'crew-conflict' },
      h('p', {}, h('strong', {}, 'Not applied: '), conflict.action.label || conflict.action.kind,
        ` (${hourMinute(conflict.action.queuedAt)}) — ${conflict.detail}`),
      h('div', { className: 'crew-actions' },
        h('button', { type: 'button', onclick: () => store.retryConflict(index) }, 'Apply again on the current version'),
        h('button', { type: 'button', className: 'secondary', onclick: () => store.dismissConflict(index) }, 'Dismiss'))));
  });
}

export async function render(main, params) {
  if (!session.crew_id) {
    noCrew(main);
    return null;
  }
  store.start();
  const banner = h('div', { className: 'crew-banner', testid: 'crew-banner', role: 'status', 'aria-live': 'polite' });
  const conflicts = h('div', { className: 'crew-conflicts', testid: 'crew-conflicts' });
  const body = h('div', { className: 'crew-screen' });
  main.append(banner, conflicts, body);
  const screen = screens[params.screen].mount(body, params);
  let wasOnline = store.link.online;
  const redraw = () => {
    drawBanner(banner);
    drawConflicts(conflicts);
    screen.draw();
    // Back online: fetch afresh what this screen shows (the outbox and sync run in the store).
    if (store.link.online && !wasOnline) screen.refresh();
    wasOnline = store.link.online;
  };
  const stop = store.onChange(redraw);
  drawBanner(banner);
  drawConflicts(conflicts);
  screen.draw();
  screen.refresh();
  return () => {
    stop();
    screen.cleanup?.();
  };
}
