// The city's settings (`#/settings`): whether devices may come without DTLS and which DTLS modes
// they may use (GET/PATCH /api/v1/tenant). Admins change them; other keys read them.
import { api, getJson } from '../api.js';
import { confirmDialog, errorSlot, guarded, problemText } from '../forms.js';
import { can } from '../session.js';
import { announce, clear, h } from '../ui.js';

const MODES = [
  { mode: 'psk', label: 'Pre-shared keys (PSK)' },
  { mode: 'rpk', label: 'Raw public keys (RPK)' },
];

// What a change cuts off, in the words of the confirmation: nothing when it only allows more.
function consequences(before, nosec, modes) {
  const lines = [];
  if (before.allow_nosec_devices && !nosec) {
    lines.push('Devices registered over plain CoAP are disconnected now: their registrations end, their next '
      + 'Send or Update is refused, and only devices with a DTLS credential can register again.');
  }
  for (const { mode } of MODES) {
    if (before.security_modes.includes(mode) && !modes.includes(mode)) {
      lines.push(`Devices with ${mode.toUpperCase()} credentials can no longer complete a DTLS handshake: their sessions end `
        + 'now, and they come back only when the mode is allowed again.');
    }
  }
  return lines;
}

export async function render(main) {
  const shellTitle = document.title;
  document.title = `City settings — ${shellTitle}`;
  const body = h('div', {});
  main.append(h('h1', {}, 'City settings'),
    h('section', { className: 'panel settings-panel', testid: 'settings-security', 'aria-labelledby': 'settings-security-title' },
      h('h2', { id: 'settings-security-title' }, 'Device security'), body));
  let tenant;
  try {
    tenant = await getJson('/api/v1/tenant');
  } catch (error) {
    body.append(h('p', { role: 'alert' }, problemText(error)));
    return () => { document.title = shellTitle; };
  }

  if (!can('manage_tenant')) {
    body.append(h('dl', { className: 'facts' },
      h('dt', {}, 'Devices without DTLS (NoSec)'), h('dd', { testid: 'policy-nosec' }, tenant.allow_nosec_devices ? 'allowed' : 'refused'),
      h('dt', {}, 'DTLS modes allowed'), h('dd', { testid: 'policy-modes' },
        MODES.filter((m) => tenant.security_modes.includes(m.mode)).map((m) => m.label).join(', ') || 'none')),
    h('p', { className: 'muted' }, 'Only an admin key changes these.'));
    return () => { document.title = shellTitle; };
  }

  const error = errorSlot('policy-error');
  const saved = h('p', { role: 'status', className: 'muted', testid: 'policy-saved' });
  const nosec = h('input', { id: 'allow-nosec', type: 'checkbox', 'aria-describedby': 'allow-nosec-hint' });
  const modes = MODES.map(({ mode }) => h('input', { id: `mode-${mode}`, type: 'checkbox', value: mode }));
  function show() {
    nosec.checked = tenant.allow_nosec_devices;
    modes.forEach((box) => { box.checked = tenant.security_modes.includes(box.value); });
  }
  show();
  clear(body).append(h('form', {
    className: 'settings-form', testid: 'policy-form',
    onsubmit: guarded(error, async () => {
      saved.textContent = '';
      const chosen = modes.filter((box) => box.checked).map((box) => box.value);
      const lines = consequences(tenant, nosec.checked, chosen);
      if (lines.length && !await confirmDialog({
        testid: 'policy-dialog', title: 'Cut devices off?', text: lines, confirm: 'Save and apply',
      })) return;
      const { data } = await api('/api/v1/tenant', { method: 'PATCH', body: {
        allow_nosec_devices: nosec.checked, security_modes: chosen } });
      tenant = data;
      show();
      saved.textContent = 'Saved: it applies now, on every node.';
      announce('City settings saved');
    }),
  },
  h('div', { className: 'check' }, nosec, h('label', { for: 'allow-nosec' }, 'Allow devices without DTLS (NoSec)')),
  h('p', { id: 'allow-nosec-hint', className: 'muted' },
    'A NoSec device registers over plain coap://, known by its name and address alone: anyone who can reach '
    + 'the CoAP port and knows a name can pose as it. Off, a plain registration is refused; a device that '
    + 'holds a DTLS credential must use it either way.'),
  h('fieldset', {}, h('legend', {}, 'DTLS modes devices may use'),
    MODES.map(({ label }, i) => h('div', { className: 'check' }, modes[i], h('label', { for: modes[i].id }, label)))),
  h('button', { type: 'submit' }, 'Save'), error, saved));
  return () => { document.title = shellTitle; };
}
