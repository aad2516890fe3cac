// "My route": the crew's collection route today, its stops in driving order, each marked done
// or skipped with a reason (POST /api/v1/routes/{id}/stops/{stop}, queued when offline).
import { isOffline } from '../api.js';
import { session } from '../session.js';
import { clear, h, number } from '../ui.js';
import { hourMinute, label, problemText } from './crew-common.js';
import * as store from './crew-store.js';

const REASONS = { blocked: 'Blocked (cannot reach it)', not_found: 'Not found', damaged: 'Damaged (opens a repair)' };
const ROUTE_STATUS = { planned: 'Planned', assigned: 'Assigned', in_progress: 'Under way', completed: 'Completed',
  cancelled: 'Cancelled', superseded: 'Re-planned' };

function today() {
  return new Intl.DateTimeFormat('en-CA', { timeZone: session.timezone }).format(new Date());
}

function routesShown() {
  return Object.values(store.state.routes)
    .filter((route) => route.date === today() || ['assigned', 'in_progress'].includes(route.status))
    .sort((a, b) => a.starts_at.localeCompare(b.starts_at));
}

function stopStatus(stop) {
  const pending = store.pendingStop(stop.id);
  return pending ? { status: pending.body.status, reason: pending.body.reason, pending: true }
    : { status: stop.status, reason: stop.skip_reason, pending: false };
}

export function mount(container) {
  const error = h('p', { className: 'error', role: 'alert' });
  const routes = h('div', { testid: 'crew-routes' });
  container.append(h('div', { className: 'crew-head' }, h('h1', {}, 'My route'),
    h('button', { type: 'button', className: 'secondary', onclick: () => refresh() }, 'Refresh')), error, routes);
  // The skip form open, and what was chosen in it, survive a redraw.
  const drafts = {};
  let skipping = null;

  function mark(route, stop, body, text) {
    store.enqueue({ kind: 'stop', routeId: route.id, stopId: stop.id, body, label: `Stop ${stop.seq + 1}: ${text}` });
  }

  function skipForm(route, stop) {
    const draft = drafts[stop.id] || (drafts[stop.id] = { reason: '', notes: '' });
    const reasonId = `skip-reason-${stop.id}`;
    const notesId = `skip-notes-${stop.id}`;
    const reason = h('select', { id: reasonId, required: true, onchange: () => { draft.reason = reason.value; } },
      h('option', { value: '' }, 'Choose…'),
      Object.entries(REASONS).map(([value, text]) => h('option', { value, selected: draft.reason === value }, text)));
    const notes = h('input', { id: notesId, type: 'text', maxlength: '2000', value: draft.notes,
      oninput: () => { draft.notes = notes.value; } });
    return h('form', { className: 'crew-skip', testid: 'skip-form', onsubmit: (event) => {
      event.preventDefault();
      if (!reason.value) { reason.focus(); return; }
      const body = { status: 'skipped', reason: reason.value };
      if (notes.value.trim()) body.notes = notes.value.trim();
      skipping = null;
      delete drafts[stop.id];
      mark(route, stop, body, `skipped (${REASONS[reason.value]})`);
    } },
    h('label', { for: reasonId }, 'Why'), reason, h('label', { for: notesId }, 'Notes (optional)'), notes,
    h('div', { className: 'crew-actions' }, h('button', { type: 'submit' }, 'Skip stop'),
      h('button', { type: 'button', className: 'secondary', onclick: () => { skipping = null; draw(); } }, 'Cancel')));
  }

  function stopItem(route, stop) {
    const seen = stopStatus(stop);
    const device = stop.device;
    const what = stop.kind === 'bin'
      ? [device?.endpoint, device?.address, device?.waste_kind && label({}, device.waste_kind),
        device?.fill_now != null ? `${number(device.fill_now)} % full` : null].filter(Boolean).join(' · ')
      : 'Disposal site: unload';
    const item = h('li', { className: `crew-stop stop-${seen.status}`, testid: 'crew-stop', dataset: { seq: stop.seq, id: stop.id } },
      h('span', { className: 'crew-stop-seq', 'aria-hidden': 'true' }, stop.seq + 1),
      h('div', { className: 'crew-stop-body' },
        h('p', { className: 'crew-stop-what' }, h('span', { className: 'visually-hidden' }, `Stop ${stop.seq + 1}: `), what),
        h('p', { className: 'crew-stop-meta' }, `Planned ${hourMinute(stop.arrival)}`, ' · ',
          h('span', { testid: 'stop-status' }, label({}, seen.status), seen.reason ? ` (${label({}, seen.reason)})` : ''),
          stop.notes ? ` · ${stop.notes}` : '',
          seen.pending ? h('span', { className: 'crew-pending' }, 'waiting to send') : null,
          stop.work_order_id ? h('a', { href: `#/crew/work-orders/${stop.work_order_id}` }, ' repair opened') : null)));
    if (seen.status === 'planned' && route.status !== 'completed') {
      const body = item.querySelector('.crew-stop-body');
      if (skipping === stop.id) body.append(skipForm(route, stop));
      else {
        body.append(h('div', { className: 'crew-actions' },
          h('button', { type: 'button', testid: 'stop-done', 'aria-label': `Stop ${stop.seq + 1} done`,
            onclick: () => mark(route, stop, { status: 'done' }, 'done') }, 'Done'),
          h('button', { type: 'button', className: 'secondary', testid: 'stop-skip', 'aria-label': `Skip stop ${stop.seq + 1}…`,
            onclick: () => { skipping = stop.id; draw(); container.querySelector(`#skip-reason-${stop.id}`)?.focus(); } }, 'Skip…')));
      }
    }
    return item;
  }

  function draw() {
    clear(routes);
    const shown = routesShown();
    if (!shown.length) {
      routes.append(h('p', { className: 'crew-muted', testid: 'no-route' }, 'No route for your crew today.'));
      return;
    }
    for (const route of shown) {
      const stops = [...(route.stops || [])].sort((a, b) => a.seq - b.seq);
      const left = stops.filter((stop) => stopStatus(stop).status === 'planned').length;
      routes.append(h('section', { className: 'panel crew-route', testid: 'crew-route', dataset: { id: route.id } },
        h('h2', {}, `Truck ${route.vehicle_number + 1}`, route.waste_kind ? ` · ${label({}, route.waste_kind)}` : '',
          ` · ${ROUTE_STATUS[route.status] || route.status}`),
        h('p', { className: 'crew-route-meta', testid: 'route-progress' },
          `${route.date}, ${hourMinute(route.starts_at)}–${hourMinute(route.ends_at)} · ${stops.length - left} of ${stops.length} stops done or skipped`
          + ` · ${number(route.distance_m / 1000, 1)} km`),
        h('ol', { className: 'crew-stops', 'aria-label': 'Stops in driving order' }, stops.map((stop) => stopItem(route, stop)))));
    }
  }

  async function refresh() {
    error.textContent = '';
    try {
      await store.sync();
      const [day, underWay] = await Promise.all([
        store.fetchJson(`/api/v1/routes?assigned_to=me&date=${today()}`),
        store.fetchJson('/api/v1/routes?assigned_to=me&status=assigned&status=in_progress'),
      ]);
      const ids = [...new Set([...day.items, ...underWay.items].map((route) => route.id))];
      const full = await Promise.all(ids.map((id) => store.fetchJson(`/api/v1/routes/${id}`)));
      for (const id of Object.keys(store.state.routes)) if (!ids.includes(id)) delete store.state.routes[id];
      full.forEach(store.keepRoute);
      store.save();
    } catch (failure) {
      if (!isOffline(failure)) error.textContent = `Could not load the route: ${problemText(failure)}`;
    }
    draw();
  }

  return { draw, refresh };
}
