// One device's page: its state, recent series as charts, alarms, work orders and commands, kept
// live by the event stream; operators dim, override and read from it (controls by permission).
import { ApiError, api, getJson, listen } from '../api.js';
import { errorSlot, guarded, problemText } from '../forms.js';
import { can, session } from '../session.js';
import { announce, clear, h, loadScript, number, setConnection, when } from '../ui.js';
import { deviceSecurity } from './device-security.js';

// What each kind's charts show, as LwM2M resource paths. A light reports its level either in
// Outdoor lamp controller 3416 (measured level, resource 3) or in Light control 3311 (Dimmer
// 5851): the first path the device has reported wins. Access points report no client count
// (LwM2M object 12 has none): their chart is the backhaul's Link Utilization.
const CHARTS = {
  streetlight: [
    { key: 'level', title: 'Dimming level', paths: ['/3416/0/3', '/3311/0/5851'] },
    { key: 'power', title: 'Power', paths: ['/3418/0/4'] },
  ],
  waste_bin: [{ key: 'fill', title: 'Fill', paths: ['/3435/0/2'] }],
  wifi_ap: [{ key: 'utilisation', title: 'Link utilisation (clients are not reported)', paths: ['/4/0/6'] }],
};
const RANGES = [
  { hours: 6, label: 'Last 6 hours', bucket: 5 },
  { hours: 24, label: 'Last 24 hours', bucket: 15 },
  { hours: 24 * 7, label: 'Last 7 days', bucket: 60 },
];
// The commands panel shows this many at first, and this many more at each "More commands".
const COMMAND_PAGE = 20;
const MAX_COMMANDS = 1000; // the API's largest page: a refresh re-reads all those shown

function units(raw) {
  if (!raw) return '';
  return raw === '/100' ? '%' : raw;
}

function shown(value, unit) {
  if (value === null || value === undefined) return '—';
  const text = typeof value === 'number' ? number(value, Number.isInteger(value) ? 0 : 1) : String(value);
  return unit ? `${text} ${unit}` : text;
}

// plotly.js drops a date's offset and shows it as written: hand it the city's wall-clock time.
function cityTime(iso, timeZone) {
  return new Date(iso).toLocaleString('sv-SE', { timeZone, hour12: false }).replace(' ', 'T');
}

function panel(testid, title, ...children) {
  return h('section', { className: 'panel device-panel', testid, 'aria-labelledby': `${testid}-title` },
    h('h2', { id: `${testid}-title` }, title), ...children);
}

// Who asked for a command: this browser's key, another key, or a job of Fleet's (lighting, ...).
function askedBy(command) {
  if (!command.requested_by) return `by ${command.origin}`;
  return command.requested_by === `key:${session.api_key_id}` ? 'by you' : `by ${command.requested_by.slice(0, 12)}…`;
}

// Why a queued command waits, as the API says it (waiting_reason).
const WAITING = {
  not_registered: 'waiting for the device to register',
  queue_mode: 'waiting for the device to wake (queue mode)',
  backing_off: 'the last try failed; trying again',
  behind_another: 'waiting for the device\'s earlier command',
  due: 'about to be sent',
};

function commandOutcome(command) {
  if (command.status === 'succeeded') return command.result == null ? '' : ` → ${JSON.stringify(command.result)}`;
  if (command.error && command.error !== command.status) return ` — ${command.error}`;
  if (command.status !== 'queued') return '';
  const again = command.next_attempt_at ? ` at ${when(command.next_attempt_at, session.timezone)}` : '';
  return ` — ${WAITING[command.waiting_reason] ?? 'waiting for the device to register or wake'}${again}`;
}

export async function render(main, params) {
  const id = params.id;
  const tz = session.timezone;
  const stopped = [];
  const charts = [];
  let left = false;
  let device;
  try {
    device = await getJson(`/api/v1/devices/${id}`);
  } catch (error) {
    main.append(h('h1', {}, 'Device'), h('p', { role: 'alert' }, problemText(error)),
      h('p', {}, h('a', { href: '#/' }, 'Back to the control room')));
    return undefined;
  }
  const shellTitle = document.title;
  document.title = `${device.endpoint} — ${shellTitle}`;
  const isLight = device.kind === 'streetlight';
  const mayDim = isLight && can('manage_schedules');
  const mayRead = can('send_commands');

  const statusBadge = h('span', { className: `status status-${device.status}`, testid: 'device-status' }, device.status);
  const stateBody = h('div', {});
  const chartsBody = h('div', { className: 'device-charts' });
  const alarmsBody = h('div', {});
  const ordersBody = h('div', {});
  const commandsBody = h('div', {});
  const overridesBody = h('div', {});
  const security = deviceSecurity(device);
  const rangeSelect = h('select', { id: 'device-range', onchange: () => drawCharts() },
    RANGES.map((r, i) => h('option', { value: String(i), selected: i === 1 }, r.label)));

  main.append(
    h('header', { className: 'device-head' },
      h('p', { className: 'crumbs' }, h('a', { href: '#/' }, 'Control room'), ' › device'),
      h('h1', { testid: 'device-title' }, device.endpoint, ' ', h('span', { className: 'kind' }, device.kind.replace('_', ' ')), ' ', statusBadge)),
    h('div', { className: 'device-grid' },
      h('div', { className: 'device-column' },
        panel('device-state', 'State', stateBody)),
      // What is wrong and who fixes it first, above the charts: under the state's long table (a
      // demo light reports some forty values) a light's alarms were far below the fold.
      h('div', { className: 'device-column' },
        panel('device-alarms', 'Alarms', alarmsBody),
        panel('device-workorders', 'Work orders', ordersBody),
        panel('device-series', 'Recent series',
          h('div', { className: 'range' }, h('label', { for: 'device-range' }, 'Range '), rangeSelect), chartsBody)),
      h('div', { className: 'device-column' },
        (mayDim || mayRead || isLight)
          ? panel('device-actions', mayDim || mayRead ? 'Act on this device' : 'Lighting overrides', controls(), overridesBody)
          : null,
        panel('device-security', 'Device security (DTLS)', security.body),
        panel('device-commands', 'Commands', commandsBody))));

  // -- state -----------------------------------------------------------------------------------
  let state = [];
  async function drawState() {
    const [fresh, values, registration] = await Promise.all([
      getJson(`/api/v1/devices/${id}`),
      getJson(`/api/v1/devices/${id}/state`),
      getJson(`/api/v1/devices/${id}/registration`).catch((error) => {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }),
    ]);
    device = fresh;
    state = values.values;
    statusBadge.textContent = device.status;
    statusBadge.className = `status status-${device.status}`;
    const facts = [
      ['Kind', device.kind.replace('_', ' ')], ['Status', device.status], ['District', device.district],
      ['Address', device.address], ['Location', `${device.location.lat.toFixed(5)}, ${device.location.lon.toFixed(5)}`],
      ['Model', [device.manufacturer, device.model].filter(Boolean).join(' ') || null],
      ['Firmware', device.firmware_version],
      ['Nominal wattage', device.nominal_wattage != null ? `${device.nominal_wattage} W` : null],
      ['Capacity', device.capacity_litres != null ? `${device.capacity_litres} l (${device.waste_kind})` : null],
      ['SSID', device.ssid],
      ['Registration', registration
        ? `${registration.address}:${registration.port} over ${registration.secure ? 'coaps (DTLS)' : 'plain CoAP'}, `
          + `${registration.binding}, expires ${when(registration.expires_at, tz)}`
        : 'not registered: commands wait in the queue until it registers'],
    ].filter(([, value]) => value !== null && value !== undefined && value !== '');
    clear(stateBody).append(
      h('dl', { className: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      state.length
        ? h('table', { testid: 'device-values' },
          h('caption', { className: 'visually-hidden' }, 'Latest reported values'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Resource'), h('th', { scope: 'col' }, 'Value'),
            h('th', { scope: 'col' }, 'Path'), h('th', { scope: 'col' }, 'Reported'))),
          h('tbody', {}, state.map((v) => h('tr', {},
            h('td', {}, v.name || '—'), h('td', {}, shown(v.value, units(v.units))),
            h('td', { className: 'path' }, v.path), h('td', {}, when(v.time, tz))))))
        : h('p', { className: 'muted' }, 'No values reported yet.'));
    await security.draw(registration);
  }

  // -- charts ----------------------------------------------------------------------------------
  const plotly = loadScript(session.assets.plotly);
  async function drawCharts() {
    const range = RANGES[Number(rangeSelect.value)];
    const until = new Date();
    const since = new Date(until.getTime() - range.hours * 3600e3);
    const reported = new Set(state.map((v) => v.path));
    const wanted = (CHARTS[device.kind] || []).map((chart) => ({
      ...chart, path: chart.paths.find((p) => reported.has(p)) || chart.paths[0],
    }));
    const series = await Promise.all(wanted.map((chart) => getJson(`/api/v1/devices/${id}/series?${new URLSearchParams({
      path: chart.path, since: since.toISOString(), until: until.toISOString(), bucket_minutes: String(range.bucket),
    })}`)));
    await plotly;
    if (left) return;
    charts.splice(0).forEach((div) => window.Plotly.purge(div));
    clear(chartsBody);
    wanted.forEach((chart, i) => {
      const data = series[i];
      const unit = units(data.units);
      const buckets = data.buckets || [];
      const values = buckets.map((b) => b.avg).filter((v) => v !== null);
      const latest = values.length ? values[values.length - 1] : null;
      const caption = values.length
        ? `${chart.title} (${data.name || chart.path}${unit ? `, ${unit}` : ''}), ${range.label.toLowerCase()}: `
          + `min ${shown(Math.min(...buckets.map((b) => b.min)), unit)}, max ${shown(Math.max(...buckets.map((b) => b.max)), unit)}, `
          + `latest ${shown(latest, unit)} (${buckets.length} bucket${buckets.length === 1 ? '' : 's'} of ${range.bucket} min`
          // A device that began reporting minutes ago (every device of a fresh demo) is one dot at
          // the range's right edge: say since when, so the empty chart does not look broken.
          + `${new Date(buckets[0].start) - since > range.bucket * 60e3 ? `, reported since ${when(buckets[0].start, tz)}` : ''})`
        : `${chart.title} (${data.name || chart.path}): no values ${range.label.toLowerCase()}`;
      const plot = h('div', { className: 'chart', 'aria-hidden': 'true' });
      chartsBody.append(h('figure', { className: 'chart-figure', testid: `chart-${chart.key}` },
        h('figcaption', {}, caption), plot));
      if (!values.length) return;
      charts.push(plot);
      const x = buckets.map((b) => cityTime(b.start, tz));
      const line = { color: '#8fd3ff', width: 2 };
      window.Plotly.newPlot(plot, [
        { type: 'scatter', mode: 'lines', x, y: buckets.map((b) => b.max), line: { width: 0 }, hoverinfo: 'skip', showlegend: false },
        { type: 'scatter', mode: 'lines', x, y: buckets.map((b) => b.min), line: { width: 0 }, fill: 'tonexty',
          fillcolor: 'rgba(143, 211, 255, 0.18)', hoverinfo: 'skip', showlegend: false },
        { type: 'scatter', mode: 'lines+markers', x, y: buckets.map((b) => b.avg), line, marker: { size: buckets.length < 12 ? 8 : 4 },
          name: chart.title, hovertemplate: `%{y:.1f} ${unit}<extra></extra>` },
      ], {
        height: 200, margin: { l: 48, r: 12, t: 8, b: 36 }, paper_bgcolor: '#17222e', plot_bgcolor: '#17222e',
        font: { color: '#eef3f8', size: 12 }, showlegend: false,
        xaxis: { type: 'date', gridcolor: '#324456', range: [cityTime(since, tz), cityTime(until, tz)] },
        yaxis: { gridcolor: '#324456', title: { text: unit }, rangemode: 'tozero' },
      }, { displayModeBar: false, responsive: true });
    });
  }

  // -- controls --------------------------------------------------------------------------------
  function controls() {
    const parts = [];
    if (mayDim) {
      const error = errorSlot('dim-error');
      const level = h('input', { id: 'dim-level', type: 'number', min: '0', max: '100', step: '1', value: '40', required: true });
      const minutes = h('input', { id: 'dim-minutes', type: 'number', min: '1', max: String(31 * 24 * 60), step: '1', value: '30', required: true });
      const reason = h('input', { id: 'dim-reason', type: 'text', maxlength: '2000', placeholder: 'optional' });
      parts.push(h('form', {
        className: 'control', testid: 'dim-form',
        onsubmit: guarded(error, async () => {
          const made = await getJson('/api/v1/lighting/overrides', { method: 'POST', body: {
            scope: { device_ids: [id] }, dimming_level: Number(level.value),
            duration_s: Math.round(Number(minutes.value) * 60), reason: reason.value || `dimmed from ${device.endpoint}'s page`,
          } });
          announce(`${device.endpoint} held at ${made.dimming_level} % until ${when(made.ends_at, tz)}`);
          await drawOverrides();
        }),
      },
      h('h3', {}, 'Dim (override the schedule)'),
      h('div', { className: 'fields' },
        h('label', { for: 'dim-level' }, 'Level (%)'), level,
        h('label', { for: 'dim-minutes' }, 'For (minutes)'), minutes,
        h('label', { for: 'dim-reason' }, 'Reason'), reason),
      h('button', { type: 'submit' }, 'Dim'), error));
    }
    if (mayRead) {
      const error = errorSlot('read-error');
      const listId = 'read-paths';
      const path = h('input', { id: 'read-path', type: 'text', list: listId, required: true, maxlength: '40',
        value: (CHARTS[device.kind] || [{ paths: ['/3/0/0'] }])[0].paths[0], pattern: '/[0-9]+(/[0-9]+){0,2}' });
      const paths = h('datalist', { id: listId });
      parts.push(h('form', {
        className: 'control', testid: 'read-form',
        onsubmit: guarded(error, async () => {
          const made = await getJson('/api/v1/commands', { method: 'POST', body: {
            target: { device_ids: [id] }, operation: 'read', path: path.value.trim() } });
          announce(`Read of ${made.path} queued`);
          await drawCommands();
        }),
        onfocusin: () => {
          clear(paths).append(state.map((v) => h('option', { value: v.path }, v.name || v.path)));
        },
      },
      h('h3', {}, 'Read a resource'),
      h('div', { className: 'fields' }, h('label', { for: 'read-path' }, 'Resource path'), path, paths),
      h('button', { type: 'submit' }, 'Read'), error));
    }
    return parts;
  }

  async function drawOverrides() {
    if (!isLight) return;
    const all = await getJson('/api/v1/lighting/overrides');
    // Overrides naming this light or its district; a group's override shows in the schedule's
    // level (GET /api/v1/lighting/preview) rather than here.
    const mine = all.filter((o) => (o.scope.device_ids || []).includes(id)
      || (o.scope.district && o.scope.district === device.district));
    const error = errorSlot('override-error');
    clear(overridesBody).append(h('h3', {}, 'Overrides'), mine.length
      ? h('ul', { className: 'plain', testid: 'device-overrides' }, mine.map((o) => h('li', { dataset: { override: o.id } },
        h('span', {}, `${o.dimming_level} % ${o.active ? 'now' : 'from ' + when(o.starts_at, tz)} until ${when(o.ends_at, tz)}`,
          o.scope.district ? ` (district ${o.scope.district})` : '', o.reason ? ` — ${o.reason}` : ''),
        can('manage_schedules') ? h('button', {
          type: 'button', className: 'secondary', 'aria-label': `Cancel override: ${o.dimming_level} % until ${when(o.ends_at, tz)}`,
          onclick: guarded(error, async () => {
            await api(`/api/v1/lighting/overrides/${o.id}/cancel`, { method: 'POST' });
            announce('Override cancelled: the schedule resumes');
            await drawOverrides();
          }),
        }, 'Cancel override') : null)))
      : h('p', { className: 'muted' }, 'No override acting on this light: it follows its schedule.'), error);
  }

  // -- alarms, work orders, commands -----------------------------------------------------------
  async function drawAlarms() {
    const page = await getJson(`/api/v1/alarms?${new URLSearchParams({ device: id, status: 'all', limit: '20' })}`);
    clear(alarmsBody).append(page.items.length
      ? h('table', {},
        h('caption', { className: 'visually-hidden' }, 'Alarms of this device, newest first'),
        h('thead', {}, h('tr', {}, ['Severity', 'Type', 'Status', 'Since', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, page.items.map((a) => h('tr', { dataset: { alarm: a.id } },
          h('td', { className: `sev-${a.severity}` }, a.severity), h('td', {}, a.type.replaceAll('_', ' ')),
          h('td', {}, a.status), h('td', {}, when(a.first_seen, tz)), h('td', {}, a.detail || '')))))
      : h('p', { className: 'muted' }, 'No alarms.'));
  }

  async function drawOrders() {
    const page = await getJson(`/api/v1/workorders?${new URLSearchParams({ device: id, limit: '20' })}`);
    clear(ordersBody).append(page.items.length
      ? h('table', {},
        h('caption', { className: 'visually-hidden' }, 'Work orders on this device'),
        h('thead', {}, h('tr', {}, ['Type', 'Priority', 'Status', 'Opened', 'Due'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, page.items.map((o) => h('tr', { dataset: { workOrder: o.id } },
          h('td', {}, o.type.replaceAll('_', ' ')), h('td', {}, o.priority), h('td', {}, o.status.replaceAll('_', ' ')),
          h('td', {}, when(o.created_at, tz)), h('td', {}, when(o.due_by, tz))))))
      : h('p', { className: 'muted' }, 'No work orders.'));
  }

  // The device's commands, newest first, from GET /api/v1/devices/{id}/commands: a page of
  // COMMAND_PAGE, more on demand. A refresh re-reads as many as are shown.
  let commandsShown = COMMAND_PAGE;
  let commandBatches = new Set();
  let commandsOpen = false;
  function commandItem(c) {
    const value = c.value == null ? '' : ` = ${JSON.stringify(c.value)}`;
    const times = [`${askedBy(c)} ${when(c.created_at, tz)}`, c.sent_at ? `sent ${when(c.sent_at, tz)}` : '',
      c.attempts > 1 ? `${c.attempts} attempts` : '', c.completed_at ? `finished ${when(c.completed_at, tz)}` : '']
      .filter(Boolean).join(', ');
    return h('li', { tabindex: '-1', dataset: { command: c.id, batch: c.batch_id, status: c.status } },
      h('span', {}, h('span', { className: `cmd cmd-${c.status}` }, c.status),
        ` ${c.operation.replaceAll('_', ' ')} ${c.path}${value}${commandOutcome(c)}`),
      h('span', { className: 'muted when' }, times));
  }

  async function drawCommands() {
    const [page, observations] = await Promise.all([
      getJson(`/api/v1/devices/${id}/commands?${new URLSearchParams({ limit: String(commandsShown) })}`),
      getJson(`/api/v1/devices/${id}/observations`),
    ]);
    if (left) return;
    commandBatches = new Set(page.items.map((c) => c.batch_id));
    commandsOpen = page.items.some((c) => c.status === 'queued' || c.status === 'sent');
    const list = h('ul', { className: 'plain', testid: 'device-command-list', 'aria-label': 'Commands, newest first' },
      page.items.map(commandItem));
    const error = errorSlot('commands-error');
    let cursor = page.next_cursor;
    const more = h('button', {
      type: 'button', className: 'secondary', testid: 'device-commands-more',
      onclick: guarded(error, async () => {
        const next = await getJson(`/api/v1/devices/${id}/commands?${new URLSearchParams({ limit: String(COMMAND_PAGE), cursor })}`);
        const items = next.items.map(commandItem);
        list.append(...items);
        next.items.forEach((c) => commandBatches.add(c.batch_id));
        commandsShown = Math.min(MAX_COMMANDS, commandsShown + items.length);
        cursor = next.next_cursor;
        if (!cursor) more.remove();
        // The button may be gone: keyboard focus goes on to the first command it brought.
        if (items.length) items[0].focus();
        announce(`${items.length} more commands shown`);
      }),
    }, 'More commands');
    clear(commandsBody).append(
      page.items.length ? list : h('p', { className: 'muted' }, 'No commands sent to this device yet.'),
      ...(cursor ? [more] : []), error,
      h('h3', {}, 'Observed paths'),
      observations.length
        ? h('ul', { className: 'plain', testid: 'device-observations' }, observations.map((o) => h('li', {},
          `${o.path} — ${o.active ? 'active' : 'asked, not yet confirmed'}${o.established_at ? `, since ${when(o.established_at, tz)}` : ''}`)))
        : h('p', { className: 'muted' }, 'Nothing observed.'));
  }

  function quietly(promise) {
    promise.catch((error) => {
      if (!left) announce(`Could not refresh: ${problemText(error)}`);
    });
  }

  await drawState();
  await Promise.all([drawCharts(), drawAlarms(), drawOrders(), drawCommands(), drawOverrides()]);

  // -- live ------------------------------------------------------------------------------------
  let streamOpened = false;
  stopped.push(listen(['alarm', 'work_order', 'device', 'command'],
    ['alarm.raised', 'alarm.updated', 'alarm.cleared', 'work_order.created', 'work_order.updated',
      'device.status_changed', 'command.finished'],
    (name, event) => {
      const payload = event.payload || {};
      if (name === 'reset') {
        quietly(Promise.all([drawState(), drawAlarms(), drawOrders(), drawCommands()]));
      } else if (name.startsWith('alarm.') && payload.device_id === id) {
        quietly(drawAlarms());
      } else if (name.startsWith('work_order.') && (payload.device_ids || []).includes(id)) {
        quietly(drawOrders());
      } else if (name === 'device.status_changed' && event.subject_id === id) {
        quietly(drawState().then(drawCharts));
      } else if (name === 'command.finished' && (payload.device_id === id
          // A large batch ends with one event for the batch, not one per device.
          || (event.subject_type === 'batch' && commandBatches.has(payload.batch_id)))) {
        quietly(Promise.all([drawCommands(), drawState()]));
      }
    }, (connection) => {
      setConnection(connection);
      // The stream starts where it connects: a command that finished between the first
      // drawing and then told no one here (a reconnect resumes where it left off).
      if (connection === 'live' && !streamOpened && commandsOpen) quietly(drawCommands());
      if (connection === 'live') streamOpened = true;
    }));

  return () => {
    left = true;
    stopped.forEach((stop) => stop());
    if (window.Plotly) charts.forEach((div) => window.Plotly.purge(div));
    document.title = shellTitle;
  };
}
