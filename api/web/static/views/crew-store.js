// The crew tablet's memory: the last data it saw (localStorage, per city and key), the outbox of
// changes made while the network was away, and catching up through GET /api/v1/sync.
import { api, ApiError, isOffline } from '../api.js';
import { session } from '../session.js';

const STORAGE_KEY = `fleet.crew.${session.tenant}.${session.api_key_id}`;
// What a crew still has to do (fleet.workorders.models.CREW_OPEN).
export const OPEN = ['assigned', 'en_route', 'in_progress', 'reopened'];
const RETRY_MS = 10000;
const SYNC_MS = 60000;
const KEEP_CLOSED_MS = 3 * 24 * 3600 * 1000;

function blank() {
  return { orders: {}, devices: {}, alarms: {}, routes: {}, attachments: {}, list: null, position: null,
    token: null, outbox: [], conflicts: [], savedAt: null };
}

function loaded() {
  try {
    return { ...blank(), ...JSON.parse(localStorage.getItem(STORAGE_KEY) || '{}') };
  } catch {
    return blank();
  }
}

export const state = loaded();
// Not kept: whether the last request reached Fleet, and whether what is drawn came from memory.
export const link = { online: navigator.onLine, stale: false };

const listeners = new Set();
export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}
function changed() {
  for (const listener of listeners) {
    try { listener(); } catch (error) { console.error(error); }
  }
}

// False when photos waiting had to be left out (no room): they still go out from memory.
export function save() {
  state.savedAt = new Date().toISOString();
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(state));
    return true;
  } catch (error) {
    console.warn('the tablet could not keep all its data', error);
  }
  try {
    const outbox = state.outbox.filter((action) => action.kind !== 'photo');
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ ...state, outbox }));
  } catch (error) {
    console.warn('the tablet could not keep its data', error);
  }
  return false;
}

function setOnline(online) {
  if (link.online === online) return;
  link.online = online;
  if (online) link.stale = false;
  changed();
}

// Every request of the crew view goes through here, so the view knows whether Fleet is reachable.
export async function request(path, options) {
  try {
    const answer = await api(path, options);
    setOnline(true);
    return answer;
  } catch (error) {
    if (isOffline(error)) {
      setOnline(false);
      link.stale = true;
    } else {
      setOnline(true);
    }
    throw error;
  }
}

export async function fetchJson(path, options) {
  return (await request(path, options)).data;
}

function newKey() {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// A note is one dated line added to the work order's notes (the API keeps them as one text).
export function noteLine(text, at = new Date()) {
  const stamp = at.toLocaleString('sv-SE', { timeZone: session.timezone }).slice(0, 16);
  return `[${stamp}] ${text.trim()}`;
}

export function keep(order) {
  if (!order?.id) return order;
  const { distance_m: _distance, ...stored } = order;
  state.orders[order.id] = stored;
  return stored;
}

export function keepRoute(route) {
  if (route.crew_id !== session.crew_id) delete state.routes[route.id];
  // The lists carry no stops (null): keep the ones already held.
  else state.routes[route.id] = { ...route, stops: route.stops ?? state.routes[route.id]?.stops ?? [] };
}

// ----- The outbox: sent in order, each with its own Idempotency-Key.

export function enqueue(action) {
  const queued = { ...action, key: newKey(), queuedAt: new Date().toISOString() };
  state.outbox.push(queued);
  const kept = save();
  changed();
  flush();
  return kept;
}

export function pendingFor(orderId) {
  return state.outbox.filter((action) => action.orderId === orderId);
}

export function pendingStop(stopId) {
  return state.outbox.find((action) => action.kind === 'stop' && action.stopId === stopId);
}

function dataUrlBlob(dataUrl, mediaType) {
  const bytes = atob(dataUrl.slice(dataUrl.indexOf(',') + 1));
  const buffer = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 1) buffer[i] = bytes.charCodeAt(i);
  return new Blob([buffer], { type: mediaType });
}

function patchBody(action, order) {
  if (action.kind === 'note') return { notes: order.notes ? `${order.notes}\n${action.line}` : action.line };
  return action.body;
}

async function send(action) {
  const headers = { 'Idempotency-Key': action.key };
  if (action.kind === 'note' || action.kind === 'status') {
    const order = state.orders[action.orderId];
    // The version this tablet last saw: a change made meanwhile by anyone else is a 412.
    headers['If-Match'] = `"${order?.version ?? 0}"`;
    const { data } = await request(`/api/v1/workorders/${action.orderId}`,
      { method: 'PATCH', body: patchBody(action, order || { notes: '' }), headers });
    keep(data);
  } else if (action.kind === 'photo') {
    headers['Content-Type'] = action.mediaType;
    const { data } = await request(`/api/v1/workorders/${action.orderId}/attachments`,
      { method: 'POST', body: dataUrlBlob(action.dataUrl, action.mediaType), headers });
    const photos = state.attachments[action.orderId] || [];
    if (!photos.some((photo) => photo.id === data.id)) photos.push(data);
    state.attachments[action.orderId] = photos;
  } else if (action.kind === 'stop') {
    // No If-Match: a stop marked offline lands whatever else changed on the route meanwhile.
    const { data } = await request(`/api/v1/routes/${action.routeId}/stops/${action.stopId}`,
      { method: 'POST', body: action.body, headers });
    keepRoute(data);
  }
}

// A change refused for a version or a state: already there (our own earlier try whose answer
// was lost), or a real conflict the crew must see.
async function alreadyApplied(action) {
  if (action.kind !== 'note' && action.kind !== 'status') return false;
  try {
    const current = keep(await fetchJson(`/api/v1/workorders/${action.orderId}`));
    if (action.kind === 'note') return current.notes.includes(action.line);
    const wanted = action.body.status;
    return current.status === wanted || (wanted === 'done' && current.status === 'verified');
  } catch (error) {
    if (isOffline(error)) throw error;
    return false;
  }
}

let flushing = null;
// Sends the outbox in order; true when it is empty afterwards.
export function flush() {
  if (!flushing) flushing = drain().finally(() => { flushing = null; });
  return flushing;
}

async function drain() {
  while (state.outbox.length) {
    const action = state.outbox[0];
    try {
      await send(action);
    } catch (error) {
      if (isOffline(error)) return false;
      const status = error instanceof ApiError ? error.status : 0;
      const inFlight = status === 409 && /in progress/.test(error.message);
      // Fleet busy or away, or signed out (the page goes to the sign-in form): kept for later.
      if (status >= 500 || status === 429 || status === 401 || inFlight || !status) return false;
      try {
        if (!([409, 412].includes(status) && await alreadyApplied(action))) {
          state.conflicts.push({ action, status, detail: error.message, at: new Date().toISOString() });
        }
      } catch (offline) {
        return false;
      }
    }
    state.outbox.shift();
    save();
    changed();
  }
  return true;
}

export function dismissConflict(index) {
  state.conflicts.splice(index, 1);
  save();
  changed();
}

// The crew's choice after seeing a conflict: apply the same change on what is there now.
export function retryConflict(index) {
  const [conflict] = state.conflicts.splice(index, 1);
  const { key: _key, queuedAt: _at, ...action } = conflict.action;
  enqueue(action);
}

// ----- Catching up.

function replaceAll() {
  Object.assign(state, { orders: {}, devices: {}, alarms: {}, routes: {} });
}

// Work orders closed a while ago leave the tablet (the list never shows them).
function forgetOld() {
  const before = new Date(Date.now() - KEEP_CLOSED_MS).toISOString();
  for (const [id, order] of Object.entries(state.orders)) {
    if (order.closed_at && order.closed_at < before && !pendingFor(id).length) {
      delete state.orders[id];
      delete state.attachments[id];
    }
  }
}

// What changed since the last token (or everything, the first time); the outbox goes first so
// the snapshots include the crew's own changes.
export async function sync() {
  if (state.outbox.length && !(await flush())) return false;
  let more = true;
  while (more) {
    const since = state.token ? `?since=${encodeURIComponent(state.token)}` : '';
    const batch = await fetchJson(`/api/v1/sync${since}`);
    if (!since || batch.reset) replaceAll();
    batch.work_orders.forEach(keep);
    for (const device of batch.devices) state.devices[device.id] = device;
    for (const alarm of batch.alarms) state.alarms[alarm.id] = alarm;
    (batch.routes || []).forEach(keepRoute);
    state.token = batch.next;
    more = batch.more;
  }
  forgetOld();
  save();
  changed();
  return true;
}

export async function device(id) {
  if (!state.devices[id] && link.online) {
    try {
      state.devices[id] = await fetchJson(`/api/v1/devices/${id}`);
    } catch (error) {
      if (!isOffline(error)) console.warn(error);
    }
  }
  return state.devices[id];
}

// ----- Where the tablet is.

export function locate() {
  return new Promise((resolve) => {
    if (!navigator.geolocation) { resolve(null); return; }
    navigator.geolocation.getCurrentPosition(
      (fix) => resolve({ lat: fix.coords.latitude, lon: fix.coords.longitude,
        accuracy_m: Math.round(fix.coords.accuracy), at: new Date(fix.timestamp).toISOString() }),
      () => resolve(null), { enableHighAccuracy: true, timeout: 8000, maximumAge: 60000 });
  });
}

export async function reportPosition(position) {
  state.position = position;
  save();
  try {
    await request('/api/v1/crews/me/position', { method: 'PUT', body: position });
  } catch (error) {
    // A missed fix is replaced by the next one; no need to queue it.
    if (!isOffline(error)) console.warn(error);
  }
}

// ----- Kept going while the app is open: retry the outbox, catch up now and then.

let started = false;
export function start() {
  if (started) return;
  started = true;
  const catchUp = () => sync().catch((error) => { if (!isOffline(error)) console.warn(error); });
  window.addEventListener('online', () => { link.online = true; changed(); catchUp(); });
  window.addEventListener('offline', () => setOnline(false));
  let last = Date.now();
  window.setInterval(() => {
    if (state.outbox.length) flush().then((empty) => { if (empty) catchUp(); });
    else if (Date.now() - last >= SYNC_MS) { last = Date.now(); catchUp(); }
  }, RETRY_MS);
}
