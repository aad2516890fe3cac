// Fleet's REST API from the pages: the session cookie authenticates, the page's CSRF token
// goes with every write, errors arrive as problem+json.
import { session } from './session.js';

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// True when the request never reached Fleet (no network): callers may queue and retry.
export function isOffline(error) {
  return error instanceof TypeError || error?.name === 'TypeError';
}

export async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const sent = { Accept: 'application/json', ...headers };
  if (!['GET', 'HEAD'].includes(method)) sent['X-CSRF-Token'] = session.csrf_token || '';
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    sent['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers: sent, body: payload, credentials: 'same-origin', signal });
  if (response.status === 401) {
    // The session ended (signed out elsewhere, key revoked, idle too long): sign in again.
    window.location.assign('/');
    throw new ApiError(401, { detail: 'signed out' });
  }
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === 'object' ? data : { detail: data });
  return { data, response };
}

export async function getJson(path, options) {
  return (await api(path, options)).data;
}

// The city's live events (SSE). `names`: the event names to hear (e.g. 'alarm.raised');
// `subjects`: the kinds= filter sent to Fleet. EventSource reconnects by itself and resumes
// from the last id it saw, so nothing is missed while the network was away.
export function listen(subjects, names, onEvent, onState = () => {}) {
  const source = new EventSource(`/api/v1/events?kinds=${encodeURIComponent(subjects.join(','))}`);
  for (const name of names) {
    source.addEventListener(name, (message) => onEvent(name, JSON.parse(message.data)));
  }
  source.addEventListener('reset', () => onEvent('reset', {}));
  source.onopen = () => onState('live');
  source.onerror = () => onState(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
  return () => source.close();
}
