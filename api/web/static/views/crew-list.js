// "My work orders": the crew's open work orders, nearest first from where the tablet is.
import { isOffline } from '../api.js';
import { clear, h, metres } from '../ui.js';
import { deviceLine, KIND, label, metresBetween, mine, pendingBadge, PRIORITY, problemText, seen, STATUS,
  TYPE } from './crew-common.js';
import * as store from './crew-store.js';

function ordered() {
  const { state } = store;
  const listed = state.list?.ids || [];
  const near = state.list?.near;
  const distance = (order) => (state.list?.distances?.[order.id] ?? (near ? metresBetween(near, order.location) : null));
  const shown = (order) => order && mine(order) && (store.OPEN.includes(seen(order).status) || seen(order).pending.length);
  const first = listed.map((id) => state.orders[id]).filter(shown);
  // Work orders that reached the tablet after the last list (through sync): by distance too.
  const later = Object.values(state.orders).filter((o) => shown(o) && !listed.includes(o.id));
  if (near) later.sort((a, b) => distance(a) - distance(b));
  return [...first, ...later].map((order) => ({ order: seen(order), distance: distance(order) }));
}

function item({ order, distance }) {
  const device = store.state.devices[order.device_ids[0]];
  return h('li', {},
    h('a', { className: 'crew-order', href: `#/crew/work-orders/${order.id}`, testid: 'crew-order', dataset: { id: order.id } },
      h('span', { className: 'crew-order-top' },
        h('span', { className: 'crew-distance', testid: 'order-distance' }, distance === null ? '—' : metres(distance)),
        h('span', { className: `crew-priority prio-${order.priority}`, testid: 'order-priority' }, label(PRIORITY, order.priority)),
        h('span', { className: `crew-status status-${order.status}`, testid: 'order-status' }, label(STATUS, order.status))),
      h('span', { className: 'crew-order-type' }, label(TYPE, order.type),
        order.device_ids.length > 1 ? ` · ${order.device_ids.length} devices` : ''),
      h('span', { className: 'crew-order-device', testid: 'order-device' },
        device ? deviceLine(device) : label(KIND, 'device')),
      pendingBadge(order.pending.length)));
}

export function mount(container) {
  const sortNote = h('p', { className: 'crew-sort', testid: 'crew-sort' });
  const error = h('p', { className: 'error', role: 'alert' });
  const list = h('ul', { className: 'crew-orders', testid: 'crew-orders', 'aria-label': 'My work orders' });
  const refreshButton = h('button', { type: 'button', className: 'secondary', onclick: () => refresh() }, 'Refresh');
  container.append(h('div', { className: 'crew-head' }, h('h1', {}, 'My work orders'), refreshButton), sortNote, error, list);

  function draw() {
    const near = store.state.list?.near;
    sortNote.textContent = near
      ? `Nearest first, from where this tablet is${near.accuracy_m ? ` (within ${metres(near.accuracy_m)})` : ''}.`
      : 'This tablet has no location: work orders in the order they were opened, not by distance.';
    sortNote.dataset.sort = near ? 'distance' : 'default';
    const rows = ordered();
    clear(list);
    if (!rows.length) list.append(h('li', { className: 'crew-empty' }, 'No open work orders for your crew.'));
    rows.forEach((row) => list.append(item(row)));
  }

  async function refresh() {
    error.textContent = '';
    const position = await store.locate();
    if (position) store.reportPosition(position);
    const query = new URLSearchParams({ assigned_to: 'me', status: store.OPEN.join(','), limit: '500' });
    if (position) query.set('near', `${position.lat.toFixed(6)},${position.lon.toFixed(6)}`);
    try {
      await store.sync();
      const page = await store.fetchJson(`/api/v1/workorders?${query}`);
      page.items.forEach(store.keep);
      store.state.list = {
        ids: page.items.map((o) => o.id), near: position,
        distances: Object.fromEntries(page.items.map((o) => [o.id, o.distance_m ?? null])),
      };
      await Promise.all(page.items.flatMap((o) => o.device_ids).map((id) => store.device(id)));
      store.save();
    } catch (failure) {
      if (!isOffline(failure)) error.textContent = `Could not load the work orders: ${problemText(failure)}`;
    }
    draw();
  }

  return { draw, refresh };
}
