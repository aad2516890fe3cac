// The control room (issue 15): the city's map, aggregated by Fleet by zoom and view, and its
// figures, kept live by the event stream. Read-only: nothing here changes the city.
import { getJson, listen } from '../api.js';
import { session } from '../session.js';
import { announce, clear, h, loadScript, number, setConnection, when } from '../ui.js';

const KINDS = { streetlight: 'Streetlights', waste_bin: 'Waste bins', wifi_ap: 'Wi-Fi APs' };
const STATUSES = ['online', 'offline', 'maintenance', 'provisioned'];
const SEVERITIES = ['critical', 'major', 'minor', 'warning'];
// Not colour alone: every severity also has its short tag on the marker and in the legend.
const SEVERITY_TAG = { critical: 'CRIT', major: 'MAJ', minor: 'MIN', warning: 'WARN' };
const SUBJECTS = ['alarm', 'device', 'work_order', 'command'];
const EVENTS = ['alarm.raised', 'alarm.updated', 'alarm.cleared', 'device.status_changed',
  'work_order.created', 'work_order.updated', 'command.finished'];
// Bursts of events (a storm of alarms) make one refresh per half second, never more.
const REFRESH_GAP_MS = 500;
const BACKSTOP_MS = 60000;
const MOVE_DEBOUNCE_MS = 200;
const VIEW_KEY = 'fleet.control.view';

const figure = (testid, text = '—', extra = {}) => h('span', { testid, className: 'figure', ...extra }, text);

function statusName(status) {
  return status.charAt(0).toUpperCase() + status.slice(1);
}

function skeleton() {
  const statusHeads = STATUSES.map((s) => h('th', { scope: 'col' }, h('span', { className: `dot st-${s}`, 'aria-hidden': 'true' }), statusName(s)));
  const kindRows = Object.entries(KINDS).map(([kind, label]) => h('tr', {},
    h('th', { scope: 'row' }, label),
    h('td', {}, figure(`count-kind-${kind}`)),
    STATUSES.map((s) => h('td', {}, figure(`count-${kind}-${s}`)))));
  return h('div', { className: 'control' },
    h('h1', { className: 'visually-hidden' }, `Control room — ${session.tenant_name}`),
    h('section', { className: 'map-wrap', 'aria-label': 'Map of the city\u2019s devices' },
      h('div', { id: 'control-map', testid: 'control-map', tabindex: '0',
        'aria-label': 'Map: arrow keys pan, plus and minus zoom, Tab reaches the markers' }),
      h('p', { className: 'map-note', testid: 'map-note', 'aria-live': 'polite' }, 'Loading the map…')),
    h('div', { className: 'panels' },
      h('section', { className: 'panel devices', 'aria-labelledby': 'p-devices' },
        h('h2', { id: 'p-devices' }, 'Devices ', figure('count-devices', '—', { className: 'figure big' })),
        h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, h('span', { className: 'visually-hidden' }, 'Kind')), h('th', { scope: 'col' }, 'All'), statusHeads)),
          h('tbody', {}, kindRows,
            h('tr', { className: 'total' }, h('th', { scope: 'row' }, 'All kinds'), h('td', {}),
              STATUSES.map((s) => h('td', {}, figure(`count-status-${s}`))))))),
      h('section', { className: 'panel alarms', 'aria-labelledby': 'p-alarms' },
        h('h2', { id: 'p-alarms' }, 'Active alarms ', figure('count-alarms-active', '—', { className: 'figure big' })),
        h('ul', { className: 'severities' }, SEVERITIES.map((s) => h('li', { className: `sev sev-${s}` },
          h('span', { className: `tag tag-${s}` }, SEVERITY_TAG[s]), ` ${statusName(s)} `, figure(`alarms-severity-${s}`)))),
        h('table', { className: 'districts' },
          h('caption', {}, 'By district'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'District'), h('th', { scope: 'col' }, 'Active'),
            SEVERITIES.map((s) => h('th', { scope: 'col', className: `sev-${s}` }, SEVERITY_TAG[s])))),
          h('tbody', { testid: 'alarms-by-district' }))),
      h('section', { className: 'panel lighting', 'aria-labelledby': 'p-lighting' },
        h('h2', { id: 'p-lighting' }, 'Street lights'),
        h('p', {}, figure('lights-lit-now', '—', { className: 'figure big' }), ' lit now of ', figure('count-lights')),
        h('dl', { className: 'energy' },
          h('dt', {}, 'Tonight as scheduled'), h('dd', {}, figure('energy-tonight-kwh'), ' kWh'),
          h('dt', {}, 'Uncontrolled (full power)'), h('dd', {}, figure('energy-uncontrolled-kwh'), ' kWh'),
          h('dt', {}, 'Saving'), h('dd', {}, figure('energy-saving-percent', '—', { className: 'figure good' }), ' %')),
        h('div', { className: 'bars energy-bars', 'aria-hidden': 'true' },
          h('div', { className: 'bar uncontrolled' }), h('div', { className: 'bar scheduled' })),
        h('p', { className: 'muted small', testid: 'tonight-window' })),
      h('section', { className: 'panel bins', 'aria-labelledby': 'p-bins' },
        h('h2', { id: 'p-bins' }, 'Waste bins by fill ', figure('count-bins', '—', { className: 'figure' })),
        h('ul', { className: 'fill', testid: 'bins-by-fill' }),
        h('h3', {}, 'Today\u2019s routes: ', figure('routes-today'), ' (', figure('routes-in-progress'), ' under way, ',
          figure('routes-planned'), ' not started, ', figure('routes-completed'), ' done)'),
        h('p', { className: 'progress-row' },
          h('progress', { testid: 'routes-progress', max: '1', value: '0', 'aria-label': 'Stops done today' }),
          h('span', {}, figure('routes-stops-done'), ' of ', figure('routes-stops-total'), ' stops'))),
      h('section', { className: 'panel aps', 'aria-labelledby': 'p-aps' },
        h('h2', { id: 'p-aps' }, 'Wi-Fi access points'),
        h('p', {}, figure('aps-online', '—', { className: 'figure big' }), ' online of ', figure('count-aps')),
        h('p', {}, figure('aps-clients-now', '—', { className: 'figure big' }), ' clients now ',
          h('span', { className: 'muted small unreported', hidden: true }, '(not reported by the access points)'))),
      h('section', { className: 'panel campaigns', 'aria-labelledby': 'p-campaigns' },
        h('h2', { id: 'p-campaigns' }, 'Firmware campaigns under way'),
        h('ul', { className: 'campaign-list', testid: 'campaigns' }, h('li', { className: 'muted' }, '—'))),
      h('p', { className: 'muted as-of' }, 'Figures as of ', figure('overview-at'))));
}

function put(root, testid, value) {
  const element = root.querySelector(`[data-testid="${testid}"]`);
  if (element) element.textContent = value;
}

function drawOverview(root, o) {
  put(root, 'count-devices', number(o.devices.total));
  for (const kind of Object.keys(KINDS)) {
    const counts = o.devices.by_kind[kind] || { total: 0, by_status: {} };
    put(root, `count-kind-${kind}`, number(counts.total));
    for (const s of STATUSES) put(root, `count-${kind}-${s}`, number(counts.by_status[s] || 0));
  }
  for (const s of STATUSES) put(root, `count-status-${s}`, number(o.devices.by_status[s] || 0));

  put(root, 'count-alarms-active', number(o.alarms.active));
  for (const s of SEVERITIES) put(root, `alarms-severity-${s}`, number(o.alarms.by_severity[s] || 0));
  const districts = clear(root.querySelector('[data-testid="alarms-by-district"]'));
  const shown = o.alarms.by_district.slice(0, 5);
  districts.append(...shown.map((d) => h('tr', {},
    h('th', { scope: 'row' }, d.district ?? 'No district'),
    h('td', { testid: `alarms-district-${d.district ?? 'none'}` }, number(d.total)),
    SEVERITIES.map((s) => h('td', { className: d.by_severity[s] ? `sev-${s}` : 'muted' }, number(d.by_severity[s] || 0))))));
  if (!shown.length) districts.append(h('tr', {}, h('td', { colspan: String(2 + SEVERITIES.length), className: 'muted' }, 'No active alarms')));
  if (o.alarms.by_district.length > shown.length) {
    districts.append(h('tr', {}, h('td', { colspan: String(2 + SEVERITIES.length), className: 'muted' },
      `and ${o.alarms.by_district.length - shown.length} more districts`)));
  }

  const light = o.lighting;
  put(root, 'lights-lit-now', number(light.lit_now));
  put(root, 'count-lights', number(light.lights));
  put(root, 'energy-tonight-kwh', number(light.tonight.energy_kwh, 1));
  put(root, 'energy-uncontrolled-kwh', number(light.tonight.uncontrolled_kwh, 1));
  const saving = light.tonight.uncontrolled_kwh > 0
    ? 100 * (1 - light.tonight.energy_kwh / light.tonight.uncontrolled_kwh) : null;
  put(root, 'energy-saving-percent', saving === null ? '—' : number(saving, 1));
  const scheduledBar = root.querySelector('.energy-bars .scheduled');
  scheduledBar.style.width = `${saving === null ? 0 : Math.max(0, 100 - saving)}%`;
  root.querySelector('.energy-bars .uncontrolled').style.width = light.tonight.uncontrolled_kwh > 0 ? '100%' : '0';
  const night = new Date(light.tonight.from).toLocaleDateString(undefined, { timeZone: session.timezone, weekday: 'short', day: 'numeric', month: 'short' });
  put(root, 'tonight-window', `Night of ${night}, sunset to sunrise`);

  const bins = o.bins;
  put(root, 'count-bins', number(bins.total));
  const most = Math.max(1, ...bins.by_fill.map((b) => b.count), bins.unknown || 0);
  const bucket = (testid, label, count, cls) => h('li', { className: cls },
    h('span', { className: 'label' }, label),
    h('span', { className: 'track', 'aria-hidden': 'true' }, h('span', { className: 'fillbar', style: `width:${(100 * count) / most}%` })),
    h('span', { testid, className: 'figure' }, number(count)));
  clear(root.querySelector('[data-testid="bins-by-fill"]')).append(
    ...bins.by_fill.map((b) => bucket(`bins-fill-${b.from}-${b.to}`, b.to >= 100 ? `${b.from} % and over` : `${b.from}–${b.to} %`,
      b.count, b.from >= 80 ? 'full' : '')),
    ...(bins.unknown ? [bucket('bins-fill-unknown', 'not reported', bins.unknown, 'unknown')] : []));
  const routes = bins.routes_today;
  put(root, 'routes-today', number(routes.routes));
  put(root, 'routes-stops-done', number(routes.stops_done));
  put(root, 'routes-stops-total', number(routes.stops_total));
  put(root, 'routes-in-progress', number(routes.in_progress));
  put(root, 'routes-planned', number(routes.planned));
  put(root, 'routes-completed', number(routes.completed));
  const progress = root.querySelector('[data-testid="routes-progress"]');
  progress.max = Math.max(1, routes.stops_total);
  progress.value = routes.stops_done;

  put(root, 'aps-online', number(o.access_points.online));
  put(root, 'count-aps', number(o.access_points.total));
  put(root, 'aps-clients-now', number(o.access_points.clients_now));
  root.querySelector('.aps .unreported').hidden = o.access_points.clients_now !== null;

  const campaigns = clear(root.querySelector('[data-testid="campaigns"]'));
  campaigns.append(...o.campaigns.map((c) => h('li', { testid: `campaign-${c.id}` },
    h('span', { className: 'name' }, c.name), ' ', h('span', { className: 'muted' }, `${c.status.replace('_', ' ')} · ${number(c.device_count)} devices`),
    h('span', { className: 'progress-row' },
      h('progress', { max: '100', value: String(c.progress_percent), 'aria-label': `${c.name}: progress` }),
      h('span', { className: 'figure' }, `${number(c.progress_percent, 1)} %`)))));
  if (!o.campaigns.length) campaigns.append(h('li', { className: 'muted' }, 'None under way'));
  put(root, 'overview-at', when(o.at, session.timezone));
}

// A cluster: a ring of its devices' statuses (share of each), the count in the middle, and the
// worst active alarm as an outer ring plus its tag.
function clusterIcon(cluster) {
  let at = 0;
  const stops = [];
  for (const s of STATUSES) {
    const share = (100 * (cluster.by_status[s] || 0)) / cluster.count;
    if (share > 0) stops.push(`var(--st-${s}) ${at}% ${at + share}%`);
    at += share;
  }
  const size = Math.round(Math.min(68, 30 + 9 * Math.log10(cluster.count)));
  const severity = cluster.worst_severity;
  const html = `<span class="donut" style="width:${size}px;height:${size}px;background:conic-gradient(${stops.join(',')})">`
    + `<span class="count">${number(cluster.count)}</span></span>`
    + (severity ? `<span class="tag tag-${severity}">${SEVERITY_TAG[severity]}</span>` : '');
  return L.divIcon({ html, className: `cluster-marker${severity ? ` sev-ring-${severity}` : ''}`,
    iconSize: [size, size], iconAnchor: [size / 2, size / 2] });
}

function deviceIcon(device) {
  const severity = device.worst_severity;
  const glyph = { streetlight: 'L', waste_bin: 'B', wifi_ap: 'W' }[device.kind] || '?';
  const html = `<span class="pin st-${device.status}">${glyph}</span>`
    + (severity ? `<span class="tag tag-${severity}">${SEVERITY_TAG[severity]}</span>` : '');
  return L.divIcon({ html, className: `device-marker${severity ? ` sev-ring-${severity}` : ''}`, iconSize: [26, 26], iconAnchor: [13, 13] });
}

function describeStatuses(byStatus) {
  return STATUSES.filter((s) => byStatus[s]).map((s) => `${number(byStatus[s])} ${s}`).join(', ');
}

function label(marker, text, attrs) {
  const element = marker.getElement();
  if (!element) return;
  element.setAttribute('aria-label', text);
  for (const [name, value] of Object.entries(attrs)) if (value !== null && value !== undefined) element.dataset[name] = value;
  // A marker is a button: Enter and Space select it (Leaflet alone opens popups on Enter only).
  element.addEventListener('keydown', (event) => {
    if (event.key !== ' ' && event.key !== 'Enter') return;
    event.preventDefault();
    if (marker.getPopup()) marker.openPopup();
    else marker.fire('click');
  });
}

function popupFor(device) {
  const kind = KINDS[device.kind] ? KINDS[device.kind].replace(/s$/, '').toLowerCase() : device.kind;
  return h('div', { className: 'device-popup' },
    h('strong', {}, device.name), h('br'),
    `${kind} · ${device.status}${device.district ? ` · ${device.district}` : ''}`, h('br'),
    device.worst_severity ? h('span', { className: `sev-${device.worst_severity}` }, `Worst active alarm: ${device.worst_severity}`) : 'No active alarm',
    h('br'), h('a', { href: `#/devices/${device.id}`, testid: 'popup-device-link' }, 'Open the device page'));
}

class CityMap {
  constructor(element, note) {
    this.note = note;
    this.map = L.map(element, { zoomControl: true, zoomSnap: 0.25, minZoom: 3, maxZoom: 19, keyboardPanDelta: 120 });
    if (session.map.tiles_url) {
      L.tileLayer(session.map.tiles_url, { attribution: session.map.attribution, maxZoom: 19 }).addTo(this.map);
    } else {
      this.map.attributionControl.setPrefix(false);
    }
    // District names sit under the markers: a marker is never hidden by a label.
    this.map.createPane('districts').style.zIndex = 450;
    this.outlines = L.layerGroup().addTo(this.map);
    this.markers = L.layerGroup().addTo(this.map);
    this.shown = new Map();  // key -> marker on the map
    this.asked = 0;
    this.controller = null;
    this.moveTimer = null;
    this.legend();
  }

  // From the first view on, every pan or zoom asks for its view (debounced: a drag is one ask).
  follow() {
    this.map.on('moveend', () => {
      clearTimeout(this.moveTimer);
      this.moveTimer = setTimeout(() => {
        this.remember();
        this.refresh().catch((error) => this.failed(error));
      }, MOVE_DEBOUNCE_MS);
    });
  }

  legend() {
    const Legend = L.Control.extend({
      onAdd() {
        return h('div', { className: 'map-legend', testid: 'map-legend' },
          h('h2', {}, 'Legend'),
          h('ul', {},
            STATUSES.map((s) => h('li', {}, h('span', { className: `dot st-${s}`, 'aria-hidden': 'true' }), statusName(s))),
            SEVERITIES.map((s) => h('li', {}, h('span', { className: `tag tag-${s}` }, SEVERITY_TAG[s]), ` ring: worst alarm ${s}`))),
          h('p', {}, 'Circles: devices grouped, number = devices, ring = share by status. Dots: L light, B bin, W Wi-Fi.'));
      },
    });
    new Legend({ position: 'bottomleft' }).addTo(this.map);
  }

  remember() {
    const c = this.map.getCenter();
    localStorage.setItem(VIEW_KEY, JSON.stringify({ lat: c.lat, lon: c.lng, zoom: this.map.getZoom() }));
  }

  restore() {
    try {
      const view = JSON.parse(localStorage.getItem(VIEW_KEY) || 'null');
      if (view && Number.isFinite(view.lat) && Number.isFinite(view.zoom)) {
        this.map.setView([view.lat, view.lon], view.zoom, { animate: false });
        return true;
      }
    } catch { /* a stale or foreign value: fit the city instead */ }
    return false;
  }

  drawDistricts(geojson) {
    this.outlines.clearLayers();
    const shapes = L.geoJSON(geojson, { interactive: false, style: { className: 'district-outline' } });
    this.outlines.addLayer(shapes);
    for (const feature of geojson.features) {
      const p = feature.properties;
      // The name stands on the outline's northern edge, where the district's markers are not.
      const north = Math.max(...feature.geometry.coordinates[0].map((corner) => corner[1]));
      this.outlines.addLayer(L.marker([north, p.label_lon], {
        interactive: false, keyboard: false, pane: 'districts',
        icon: L.divIcon({ className: 'district-label', html: `<span>${p.district.replace(/[<>&"]/g, '')}</span>`, iconSize: null }),
      }));
    }
    return geojson.features.length ? shapes.getBounds() : null;
  }

  fit(bounds) {
    this.map.fitBounds(bounds, { padding: [30, 30], animate: false, maxZoom: 16 });
  }

  viewQuery() {
    const b = this.map.getBounds();
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const box = [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90), clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)]
      .map((v) => v.toFixed(6));
    // The whole zoom below: cells a little larger than 64 pixels rather than smaller.
    return `bbox=${box.join(',')}&zoom=${Math.floor(this.map.getZoom())}`;
  }

  // Only the latest answer is drawn: an older one (the view moved on) is dropped.
  async refresh() {
    if (!this.map.getSize().x) return;
    this.controller?.abort();
    this.controller = new AbortController();
    const asked = ++this.asked;
    let answer;
    try {
      answer = await getJson(`/api/v1/map?${this.viewQuery()}`, { signal: this.controller.signal });
    } catch (error) {
      if (error.name === 'AbortError') return;
      throw error;
    }
    if (asked !== this.asked) return;
    this.draw(answer);
  }

  // Markers whose content did not change are kept, not redrawn: a live refresh every few
  // seconds must not close the popup someone reads or take the keyboard's focus away.
  draw(answer) {
    const focusedKey = document.activeElement?.dataset?.key;
    const wanted = new Map();
    for (const cluster of answer.clusters) {
      wanted.set(`c:${cluster.lat},${cluster.lon}:${JSON.stringify([cluster.count, cluster.by_status, cluster.worst_severity])}`,
        () => this.clusterMarker(cluster));
    }
    for (const device of answer.devices) {
      wanted.set(`d:${device.id}:${JSON.stringify([device.status, device.worst_severity, device.lat, device.lon, device.name])}`,
        () => this.deviceMarker(device));
    }
    for (const [key, marker] of this.shown) {
      if (!wanted.has(key)) { this.markers.removeLayer(marker); this.shown.delete(key); }
    }
    for (const [key, make] of wanted) {
      if (this.shown.has(key)) continue;
      const marker = make();
      this.shown.set(key, marker);
      marker.getElement().dataset.key = key.split(':').slice(0, 2).join(':');
    }
    if (focusedKey && !document.activeElement?.dataset?.key) {
      // The focused marker was replaced (its device changed): the focus moves to the new one.
      this.map.getContainer().querySelector(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
    }
    const shown = answer.clusters.length
      ? `${number(answer.clusters.reduce((n, c) => n + c.count, 0))} devices in view, grouped — zoom in or select a group`
      : `${number(answer.devices.length)} devices in view`;
    this.note.textContent = shown;
    this.note.dataset.state = 'ok';
  }

  clusterMarker(cluster) {
    const marker = L.marker([cluster.lat, cluster.lon], { icon: clusterIcon(cluster), keyboard: true, riseOnHover: true });
    marker.on('click', () => {
      const [w, s, e, n] = cluster.bbox;
      this.map.fitBounds([[s, w], [n, e]], { padding: [40, 40], maxZoom: 19 });
    });
    this.markers.addLayer(marker);
    label(marker, `${number(cluster.count)} devices: ${describeStatuses(cluster.by_status)}; `
      + `${cluster.worst_severity ? `worst active alarm ${cluster.worst_severity}` : 'no active alarm'}. Zoom in.`,
    { testid: 'map-cluster', severity: cluster.worst_severity, count: String(cluster.count) });
    return marker;
  }

  deviceMarker(device) {
    const marker = L.marker([device.lat, device.lon], { icon: deviceIcon(device), keyboard: true, riseOnHover: true,
      zIndexOffset: device.worst_severity ? 1000 : 0 });
    marker.bindPopup(() => popupFor(device));
    // From the keyboard: the popup's link takes the focus, Escape gives it back to the marker.
    marker.on('popupopen', (event) => {
      const popup = event.popup.getElement();
      popup?.addEventListener('keydown', (key) => { if (key.key === 'Escape') marker.closePopup(); });
      popup?.querySelector('a[href^="#/devices/"]')?.focus();
    });
    marker.on('popupclose', () => {
      const element = marker.getElement();
      const focused = document.activeElement;
      if (element && (!focused || focused === document.body || focused.closest('.leaflet-popup'))) element.focus();
    });
    this.markers.addLayer(marker);
    label(marker, `${device.name}, ${device.kind.replace('_', ' ')}, ${device.status}; `
      + `${device.worst_severity ? `worst active alarm ${device.worst_severity}` : 'no active alarm'}`,
    { testid: 'map-device', deviceId: device.id, severity: device.worst_severity, status: device.status });
    return marker;
  }

  failed(error) {
    this.note.textContent = `The map could not be updated: ${error.message}`;
    this.note.dataset.state = 'error';
  }

  remove() {
    clearTimeout(this.moveTimer);
    this.controller?.abort();
    this.map.remove();
  }
}

export async function render(main) {
  const root = skeleton();
  main.append(root);
  let stopped = false;
  const note = root.querySelector('[data-testid="map-note"]');

  // Both figures and map start at once; the map's first view waits only for the outlines
  // when no earlier view of this screen was kept.
  let overviewsAsked = 0;
  const overview = () => {
    const asked = ++overviewsAsked;
    // An answer overtaken by a later one is dropped: the screen never steps back in time.
    return getJson('/api/v1/overview').then((o) => { if (!stopped && asked === overviewsAsked) drawOverview(root, o); });
  };
  const firstOverview = overview();
  const districts = getJson('/api/v1/map/districts');
  if (!window.L) await loadScript(`${session.assets.leaflet}/leaflet.js`);
  const city = new CityMap(root.querySelector('#control-map'), note);
  const restored = city.restore();
  const firstMap = (async () => {
    const first = restored ? city.refresh() : null;
    const bounds = city.drawDistricts(await districts);
    if (!restored) {
      if (bounds) city.fit(bounds);
      else {
        // No districts yet: ask for the whole world once, then look at what is there.
        const everything = await getJson('/api/v1/map?bbox=-180,-85,180,85&zoom=3');
        const points = [...everything.clusters, ...everything.devices].map((p) => [p.lat, p.lon]);
        if (points.length) city.fit(L.latLngBounds(points));
        else city.map.setView([37.5665, 126.978], 11);
      }
    }
    city.follow();
    await (first || city.refresh());
  })();

  // Live: at most one refresh per REFRESH_GAP_MS, the first one at once, so a change shows
  // within about half a second and a burst never floods Fleet.
  let lastStart = 0;
  let running = false;
  let pending = false;
  let timer = null;
  let connection = null;
  const refresh = async () => {
    timer = null;
    if (running) { pending = true; return; }
    running = true;
    pending = false;
    lastStart = performance.now();
    try {
      await Promise.all([overview(), city.refresh()]);
    } catch (error) {
      if (!stopped) city.failed(error);
    } finally {
      running = false;
      if (pending && !stopped) schedule();
    }
  };
  const schedule = () => {
    if (stopped || timer) return;
    if (running) { pending = true; return; }
    timer = setTimeout(refresh, Math.max(0, lastStart + REFRESH_GAP_MS - performance.now()));
  };

  const stopListening = listen(SUBJECTS, EVENTS, (name, event) => {
    if (name === 'alarm.raised' && event.payload?.severity === 'critical') {
      announce(`Critical alarm: ${event.payload.type ?? ''}`.trim());
    }
    schedule();
  }, (state) => {
    setConnection(state);
    // Back after a break: the stream resumes where it left off, but catch up at once anyway.
    if (state === 'live' && connection && connection !== 'live') schedule();
    connection = state;
  });
  const backstop = setInterval(schedule, BACKSTOP_MS);

  Promise.all([firstOverview, firstMap]).then(() => {
    // What bench/dashboard measures: the city's figures and the map's first aggregate drawn.
    if (!stopped && !performance.getEntriesByName('fleet:control-room-painted').length) {
      performance.mark('fleet:control-room-painted');
      root.dataset.painted = 'true';
    }
  }).catch((error) => {
    if (!stopped) root.prepend(h('p', { role: 'alert', testid: 'control-error' }, `Some figures could not be loaded: ${error.message}`));
  });

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(backstop);
    stopListening();
    city.remove();
    setConnection('');
  };
}
