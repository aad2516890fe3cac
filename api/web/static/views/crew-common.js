// Words and small pieces the crew tablet's screens share.
import { session } from '../session.js';
import { h } from '../ui.js';
import { pendingFor, state } from './crew-store.js';

export const STATUS = {
  new: 'New', assigned: 'Assigned', en_route: 'On the way', in_progress: 'In progress', done: 'Done',
  cannot_fix: 'Cannot fix', cancelled: 'Cancelled', verified: 'Verified', reopened: 'Reopened',
};
export const PRIORITY = { low: 'Low', medium: 'Medium', high: 'High', urgent: 'Urgent' };
export const TYPE = {
  repair_lamp: 'Repair lamp', replace_controller: 'Replace controller', empty_bin: 'Empty bin',
  clean_or_repair_bin: 'Clean or repair bin', inspect_access_point: 'Inspect access point', other: 'Other work',
};
export const KIND = { streetlight: 'Street light', waste_bin: 'Waste bin', wifi_ap: 'Wi-Fi access point' };

export function label(words, value) {
  return words[value] || String(value || '—').replaceAll('_', ' ');
}

// The work order as the crew should see it: what Fleet last said, with the changes still in
// the outbox laid over it.
export function seen(order) {
  const pending = pendingFor(order.id);
  let { status } = order;
  for (const action of pending) if (action.kind === 'status') status = action.body.status;
  return { ...order, status, pending };
}

export function mine(order) {
  return order.crew_id === session.crew_id;
}

export function deviceLine(device) {
  if (!device) return 'Device not on this tablet yet';
  return [label(KIND, device.kind), device.endpoint, device.address || device.district].filter(Boolean).join(' · ');
}

export function pendingBadge(count) {
  if (!count) return null;
  return h('span', { className: 'crew-pending', testid: 'pending' },
    `${count} change${count === 1 ? '' : 's'} waiting to send`);
}

export function clock(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, { timeZone: session.timezone, dateStyle: 'medium', timeStyle: 'short' });
}

export function hourMinute(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleTimeString(undefined, { timeZone: session.timezone, hour: '2-digit', minute: '2-digit' });
}

export function shownSince() {
  return state.savedAt ? `what this tablet saw at ${hourMinute(state.savedAt)}` : 'nothing yet';
}

// Great-circle metres, for work orders the last list from Fleet did not have.
export function metresBetween(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(s));
}

export function problemText(error) {
  return error?.message || String(error);
}
