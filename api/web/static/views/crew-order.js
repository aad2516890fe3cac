// A work order's page on the tablet: the device, its history, notes, photos and the status
// buttons for the moves a crew may make from where it is (fleet.workorders.models.TRANSITIONS).
import { isOffline } from '../api.js';
import { clear, h } from '../ui.js';
import { clock, deviceLine, label, mine, pendingBadge, PRIORITY, problemText, seen, STATUS,
  TYPE } from './crew-common.js';
import * as store from './crew-store.js';

// A crew's moves: cancelling is the control room's, verified and reopened the device's.
const MOVES = {
  assigned: [['en_route', 'On my way'], ['in_progress', 'Start work']],
  en_route: [['in_progress', 'Start work'], ['assigned', 'Put on hold']],
  in_progress: [['done', 'Close as done…'], ['cannot_fix', 'Cannot fix…'], ['en_route', 'Pause work']],
  reopened: [['en_route', 'On my way'], ['in_progress', 'Start work'], ['assigned', 'Put on hold']],
  cannot_fix: [['assigned', 'Take it on again']],
};
const RESOLUTIONS = {
  done: ['lamp_replaced', 'controller_replaced', 'controller_reset', 'bin_emptied', 'bin_cleaned', 'bin_repaired',
    'access_point_restarted', 'access_point_replaced', 'cable_repaired', 'no_fault_found', 'other'],
  cannot_fix: ['parts_needed', 'no_access', 'unsafe', 'needs_specialist', 'device_missing', 'other'],
};
const MAX_PHOTO = 5 * 1024 * 1024;

// A camera's photo (often over the API's 5 MiB) is sent as a JPEG at most this wide or high:
// enough to see the work, small enough to wait in the tablet's storage while offline.
const PHOTO_EDGE = 1600;
const SHRINK_OVER = 1024 * 1024;

async function photoData(file) {
  if (file.size <= SHRINK_OVER) return { dataUrl: await readAsDataUrl(file), mediaType: file.type || 'image/jpeg' };
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, PHOTO_EDGE / Math.max(bitmap.width, bitmap.height));
    const canvas = h('canvas', { width: Math.round(bitmap.width * scale), height: Math.round(bitmap.height * scale) });
    canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return { dataUrl: canvas.toDataURL('image/jpeg', 0.85), mediaType: 'image/jpeg' };
  } catch (error) {
    console.warn('could not shrink the photo', error);
    return { dataUrl: await readAsDataUrl(file), mediaType: file.type || 'image/jpeg' };
  }
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function historyOf(order) {
  const alarm = order.alarm_id ? store.state.alarms[order.alarm_id] : null;
  const entries = [
    [order.created_at, `Opened (${order.source}) by ${order.created_by}`],
    alarm && [alarm.first_seen, `Alarm: ${label({}, alarm.type)} (${alarm.severity}), ${alarm.status}, seen ${alarm.count}×`],
    alarm?.cleared_at && [alarm.cleared_at, `Alarm cleared${alarm.clear_reason ? ` (${alarm.clear_reason})` : ''}`],
    order.due_by && [order.due_by, 'Due'],
    [order.updated_at, `Last change: ${label(STATUS, order.status)} (version ${order.version})`],
    order.closed_at && [order.closed_at, `Closed${order.resolution_code ? `: ${label({}, order.resolution_code)}` : ''}`
      + (order.time_spent_minutes != null ? `, ${order.time_spent_minutes} min` : '')],
    order.verified_at && [order.verified_at, 'Verified by the device'],
    order.reopened_at && [order.reopened_at, 'Reopened: the fault came back'],
    ...(store.state.attachments[order.id] || []).map((photo) => [photo.created_at, `Photo added by ${photo.created_by}`]),
  ].filter(Boolean);
  return entries.sort((a, b) => a[0].localeCompare(b[0]));
}

export function mount(container, params) {
  const { id } = params;
  const head = h('div', { className: 'crew-order-head' });
  const error = h('p', { className: 'error', role: 'alert', testid: 'order-error' });
  const moves = h('div', { className: 'crew-actions', testid: 'order-moves', role: 'group', 'aria-label': 'Status' });
  const devices = h('div', { testid: 'order-devices' });
  const history = h('ol', { className: 'crew-history', testid: 'order-history' });
  const notes = h('div', { className: 'crew-notes', testid: 'order-notes' });
  const photos = h('div', { className: 'crew-photos', testid: 'order-photos' });

  // The forms stay while the data around them is redrawn, so nothing typed is lost.
  const resolution = h('select', { id: 'crew-resolution', required: true });
  const minutes = h('input', { id: 'crew-minutes', type: 'number', min: '0', max: '100000', inputmode: 'numeric' });
  const closeButton = h('button', { type: 'submit' }, 'Close');
  const closeForm = h('form', { className: 'crew-close panel', hidden: true, testid: 'close-form' },
    h('h2', {}, 'Close the work order'),
    h('label', { for: 'crew-resolution' }, 'Resolution'), resolution,
    h('label', { for: 'crew-minutes' }, 'Time spent (minutes, optional)'), minutes,
    h('div', { className: 'crew-actions' }, closeButton,
      h('button', { type: 'button', className: 'secondary', onclick: () => { closeForm.hidden = true; } }, 'Cancel')));
  const noteText = h('textarea', { id: 'crew-note', rows: '3', maxlength: '2000' });
  const noteForm = h('form', { className: 'crew-note-form' },
    h('label', { for: 'crew-note' }, 'New note'), noteText, h('button', { type: 'submit' }, 'Add note'));
  const photoInput = h('input', { id: 'crew-photo', type: 'file', accept: 'image/*', capture: 'environment', className: 'crew-file' });
  const photoError = h('p', { className: 'error', role: 'alert' });

  container.append(
    h('p', {}, h('a', { href: '#/crew', className: 'crew-back' }, '← My work orders')),
    head, error, moves, closeForm,
    h('section', { className: 'panel', 'aria-labelledby': 'crew-device-h' }, h('h2', { id: 'crew-device-h' }, 'Device'), devices),
    h('section', { className: 'panel', 'aria-labelledby': 'crew-notes-h' }, h('h2', { id: 'crew-notes-h' }, 'Notes'), notes, noteForm),
    h('section', { className: 'panel', 'aria-labelledby': 'crew-photos-h' }, h('h2', { id: 'crew-photos-h' }, 'Photos'), photos,
      h('label', { for: 'crew-photo', className: 'button crew-photo-button' }, 'Add a photo'), photoInput, photoError),
    h('section', { className: 'panel', 'aria-labelledby': 'crew-history-h' }, h('h2', { id: 'crew-history-h' }, 'History'), history));

  let closing = 'done';
  function openClose(target) {
    closing = target;
    clear(resolution);
    resolution.append(h('option', { value: '' }, 'Choose…'),
      ...RESOLUTIONS[target].map((code) => h('option', { value: code }, label({}, code))));
    closeButton.textContent = target === 'done' ? 'Close as done' : 'Close: cannot fix';
    closeForm.hidden = false;
    resolution.focus();
  }

  function move(status) {
    const order = store.state.orders[id];
    store.enqueue({ kind: 'status', orderId: id, body: { status }, label: `${label(TYPE, order.type)}: ${label(STATUS, status)}` });
  }

  closeForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!resolution.value) { resolution.focus(); return; }
    const body = { status: closing, resolution_code: resolution.value };
    if (minutes.value !== '') body.time_spent_minutes = Number(minutes.value);
    const order = store.state.orders[id];
    store.enqueue({ kind: 'status', orderId: id, body, label: `${label(TYPE, order.type)}: ${label(STATUS, closing)}` });
    closeForm.hidden = true;
  });
  noteForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!noteText.value.trim()) { noteText.focus(); return; }
    store.enqueue({ kind: 'note', orderId: id, line: store.noteLine(noteText.value), label: 'Note' });
    noteText.value = '';
  });
  photoInput.addEventListener('change', async () => {
    photoError.textContent = '';
    const [file] = photoInput.files;
    photoInput.value = '';
    if (!file) return;
    const photo = await photoData(file);
    if (photo.dataUrl.length * 0.75 > MAX_PHOTO) { photoError.textContent = 'This photo is over 5 MiB: take a smaller one.'; return; }
    const kept = store.enqueue({ kind: 'photo', orderId: id, ...photo, label: 'Photo' });
    if (!kept) photoError.textContent = 'No room left on the tablet to keep this photo: keep this page open until it is sent.';
  });

  function drawMoves(order) {
    clear(moves);
    if (!mine(order)) {
      moves.append(h('p', {}, 'This work order is not your crew\'s.'));
      return;
    }
    for (const [status, text] of MOVES[order.status] || []) {
      const closes = status === 'done' || status === 'cannot_fix';
      moves.append(h('button', { type: 'button', className: closes ? '' : 'secondary', testid: `move-${status}`,
        onclick: () => (closes ? openClose(status) : move(status)) }, text));
    }
  }

  function drawNotes(order) {
    clear(notes);
    const lines = (order.notes || '').split('\n').filter((line) => line.trim());
    for (const line of lines) notes.append(h('p', { className: 'crew-note' }, line));
    for (const action of order.pending.filter((a) => a.kind === 'note')) {
      notes.append(h('p', { className: 'crew-note crew-note-pending', testid: 'note-pending' }, action.line, ' ',
        h('span', { className: 'crew-pending' }, 'waiting to send')));
    }
    if (!notes.firstChild) notes.append(h('p', { className: 'crew-muted' }, 'No notes yet.'));
  }

  function drawPhotos(order) {
    clear(photos);
    for (const photo of store.state.attachments[id] || []) {
      photos.append(h('a', { href: `/api/v1/workorders/${id}/attachments/${photo.id}`, target: '_blank', className: 'crew-thumb' },
        h('img', { src: `/api/v1/workorders/${id}/attachments/${photo.id}`, alt: `Photo added ${clock(photo.created_at)}`,
          testid: 'photo-thumb', loading: 'lazy' })));
    }
    for (const action of order.pending.filter((a) => a.kind === 'photo')) {
      photos.append(h('span', { className: 'crew-thumb crew-thumb-pending' },
        h('img', { src: action.dataUrl, alt: 'Photo waiting to send', testid: 'photo-pending' }),
        h('span', { className: 'crew-pending' }, 'waiting to send')));
    }
    if (!photos.firstChild) photos.append(h('p', { className: 'crew-muted' }, 'No photos yet.'));
  }

  function draw() {
    const stored = store.state.orders[id];
    clear(head);
    if (!stored) {
      head.append(h('h1', {}, 'Work order'), h('p', {}, store.link.online ? 'Loading…' : 'This work order is not on this tablet.'));
      return;
    }
    const order = seen(stored);
    head.append(h('h1', {}, label(TYPE, order.type)),
      h('p', { className: 'crew-order-meta' },
        h('span', { className: `crew-status status-${order.status}`, testid: 'order-status' }, label(STATUS, order.status)),
        h('span', { className: `crew-priority prio-${order.priority}` }, `${label(PRIORITY, order.priority)} priority`),
        order.due_by ? h('span', {}, `Due ${clock(order.due_by)}`) : null,
        pendingBadge(order.pending.length)));
    drawMoves(order);
    clear(devices);
    for (const deviceId of order.device_ids) {
      const device = store.state.devices[deviceId];
      devices.append(h('p', { className: 'crew-device', testid: 'order-device' }, deviceLine(device),
        device?.status ? ` · ${device.status}` : '', ' ',
        h('a', { href: `#/devices/${deviceId}` }, 'Device page')));
    }
    if (!order.device_ids.length) devices.append(h('p', {}, `At ${order.location.lat.toFixed(5)}, ${order.location.lon.toFixed(5)}`));
    drawNotes(order);
    drawPhotos(order);
    clear(history);
    for (const [at, text] of historyOf(order)) history.append(h('li', {}, h('time', { datetime: at }, clock(at)), ' ', text));
  }

  async function refresh() {
    error.textContent = '';
    try {
      await store.sync();
      const order = store.keep(await store.fetchJson(`/api/v1/workorders/${id}`));
      store.state.attachments[id] = await store.fetchJson(`/api/v1/workorders/${id}/attachments`);
      await Promise.all(order.device_ids.map((deviceId) => store.device(deviceId)));
      if (order.alarm_id) store.state.alarms[order.alarm_id] = await store.fetchJson(`/api/v1/alarms/${order.alarm_id}`);
      store.save();
    } catch (failure) {
      if (!isOffline(failure)) error.textContent = `Could not load the work order: ${problemText(failure)}`;
    }
    draw();
  }

  return { draw, refresh };
}
