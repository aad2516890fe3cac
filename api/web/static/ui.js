// Small DOM helpers shared by the views: no framework, no build step.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name === 'testid') element.dataset.testid = value;
    else element.setAttribute(name === 'className' ? 'class' : name, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// What makes a control the same control after a redraw: its kind, test id, name and label.
// A link or a listed item is known by where it leads or what it shows (its text may change:
// a distance, a status); other controls by their label.
function focusKey(element) {
  const identity = element.dataset?.id || element.getAttribute('href')
    || element.getAttribute('aria-label') || element.textContent.trim();
  return [element.tagName, element.dataset?.testid || '', element.getAttribute('name') || '', identity].join('|');
}

// Empties `element` for a redraw. A redraw must not take the keyboard's place away: if the
// focus was inside, it goes back to the same control once the (synchronous) redraw is done.
export function clear(element) {
  const active = document.activeElement;
  if (active && active !== document.body && element.contains(active)) {
    const key = focusKey(active);
    queueMicrotask(() => {
      const now = document.activeElement;
      if (now && now !== document.body && document.contains(now)) return;
      const again = [...element.querySelectorAll(active.tagName)].find((e) => focusKey(e) === key);
      if (again) again.focus();
    });
  }
  while (element.firstChild) element.firstChild.remove();
  return element;
}

const numbers = new Intl.NumberFormat(undefined);
export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  return digits ? Number(value).toFixed(digits) : numbers.format(Math.round(value));
}

export function when(iso, timeZone) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, { timeZone, dateStyle: 'short', timeStyle: 'short' });
}

export function metres(value) {
  if (value === null || value === undefined) return '—';
  return value >= 1000 ? `${(value / 1000).toFixed(1)} km` : `${Math.round(value)} m`;
}

// One line of news for screen readers and sighted users alike (role=status region).
export function announce(text) {
  const region = document.getElementById('connection');
  if (region) region.dataset.message = text;
  let live = document.getElementById('announcer');
  if (!live) {
    live = h('div', { id: 'announcer', className: 'visually-hidden', role: 'status', 'aria-live': 'polite' });
    document.body.append(live);
  }
  live.textContent = text;
}

export function setConnection(state) {
  const element = document.getElementById('connection');
  if (!element) return;
  const label = { live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline', closed: 'Disconnected' }[state] || state;
  element.textContent = label;
  element.dataset.state = state;
}

// Loads a classic script (a vendor library) once, on the first view that needs it.
const loaded = new Map();
export function loadScript(src) {
  if (!loaded.has(src)) {
    loaded.set(src, new Promise((resolve, reject) => {
      const script = h('script', { src });
      script.onload = resolve;
      script.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.append(script);
    }));
  }
  return loaded.get(src);
}
