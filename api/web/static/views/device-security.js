// A device's DTLS credential on its page: how it authenticates (NoSec, PSK identity, RPK
// fingerprint), since when, and whether it registered over coaps; keys that may manage devices
// set or rotate a PSK (Fleet makes the key up and shows it once), set a raw public key, revoke.
import { api, getJson } from '../api.js';
import { confirmDialog, errorSlot, guarded, secretDialog } from '../forms.js';
import { can, session } from '../session.js';
import { announce, clear, h, when } from '../ui.js';

const MODES = { psk: 'Pre-shared key (PSK)', rpk: 'Raw public key (RPK)' };

// Four hex digits at a time, as people read a fingerprint out to each other.
function grouped(hex) {
  return (hex || '').match(/.{1,4}/g)?.join(' ') ?? '—';
}

function describe(credential) {
  return credential.mode === 'psk'
    ? [`${MODES.psk}, identity `, h('code', {}, credential.identity)]
    : [`${MODES.rpk}, SHA-256 fingerprint `, h('code', { className: 'fingerprint' }, grouped(credential.fingerprint))];
}

// The credential named in a sentence (a confirmation's text).
function named(credential) {
  return credential.mode === 'psk' ? `PSK (identity "${credential.identity}")`
    : `public key (fingerprint ${grouped(credential.fingerprint).slice(0, 19)}…)`;
}

export function deviceSecurity(device) {
  const tz = session.timezone;
  const path = `/api/v1/devices/${device.id}/security`;
  const mayManage = can('manage_devices') && device.status !== 'decommissioned';
  const facts = h('div', {});
  const controls = h('div', {});
  let credentials = [];
  let tenant = null;
  let registration = null;
  let refresh = () => {};

  // The credential of a purpose that says how the device authenticates: the active one, else
  // the pending one the bootstrap server issued.
  function holding(purpose, state) {
    return credentials.find((c) => c.purpose === purpose && (!state || c.state === state));
  }

  function drawFacts() {
    const active = holding('operational', 'active');
    const pending = holding('operational', 'pending');
    const current = active || pending;
    const bootstrap = holding('bootstrap');
    const rows = [
      ['Authenticates with', current ? describe(current)
        : 'NoSec: no DTLS credential; known by its name and address alone', 'security-mode'],
    ];
    if (active) rows.push(['State', `active since ${when(active.created_at, tz)} (version ${active.version})`, 'security-state']);
    if (pending) {
      rows.push([active ? 'Pending' : 'State', [active ? [describe(pending), ', '] : '',
        `pending since ${when(pending.created_at, tz)}: issued by the bootstrap server, active once the device registers with it`],
      active ? 'security-pending' : 'security-state']);
    }
    rows.push(['Bootstrap credential', bootstrap ? [describe(bootstrap), `, since ${when(bootstrap.created_at, tz)}`]
      : 'none', 'security-bootstrap']);
    rows.push(['Current registration', !registration ? 'not registered'
      : registration.secure ? 'over coaps:// (DTLS)' : 'over plain coap:// (no DTLS)', 'security-registration']);
    const notes = [];
    if (!current && tenant && !tenant.allow_nosec_devices) {
      notes.push('This city refuses devices without DTLS: this device cannot register until it has a credential.');
    }
    if (current && registration && !registration.secure) {
      notes.push('It registered over plain CoAP before it had a key: its next registration must come over coaps:// with its key.');
    }
    if (current && tenant && !tenant.security_modes.includes(current.mode)) {
      notes.push(`This city no longer allows ${current.mode.toUpperCase()} devices: this device cannot complete a DTLS handshake.`);
    }
    clear(facts).append(
      h('dl', { className: 'facts' }, rows.map(([term, value, testid]) => [h('dt', {}, term), h('dd', { testid }, value)])),
      ...notes.map((note) => h('p', { className: 'warning', testid: 'security-note' }, note)));
    if (current?.mode === 'rpk') {
      facts.append(h('details', { className: 'pem-details' },
        h('summary', {}, 'Show the public key (PEM)'), h('pre', { className: 'pem' }, current.public_key)));
    }
  }

  // Asks before a new credential retires the one the device holds (it is cut off until it has the new one).
  async function mayReplace(purpose) {
    const old = holding(purpose);
    return !old || confirmDialog({
      testid: 'replace-dialog', title: `Replace ${device.endpoint}'s ${purpose} credential?`,
      text: [`Its ${named(old)} stops working at once and its DTLS sessions end.`,
        'The device cannot connect with it again: it needs the new credential.'],
      confirm: 'Replace it',
    });
  }

  function pskForm() {
    const error = errorSlot('psk-error');
    let typed = false;
    const identity = h('input', { id: 'psk-identity', type: 'text', required: true, maxlength: '32', spellcheck: 'false',
      autocomplete: 'off', oninput: () => { typed = true; } });
    const purpose = h('select', { id: 'psk-purpose', onchange: () => label() },
      h('option', { value: 'operational' }, 'Operational: the device registers with it'),
      h('option', { value: 'bootstrap' }, 'Bootstrap: a factory key to ask /bs with'));
    const submit = h('button', { type: 'submit' }, 'Set PSK');
    // The button says whether it replaces a key; the identity starts as the one held (or the
    // endpoint's name) until someone types another.
    function label() {
      const held = holding(purpose.value);
      submit.textContent = !held ? 'Set PSK' : held.mode === 'psk' ? 'Rotate PSK' : 'Switch to a PSK';
      if (!typed) {
        identity.value = held?.mode === 'psk' ? held.identity
          : purpose.value === 'bootstrap' ? `${device.endpoint}-bs` : device.endpoint;
      }
    }
    refresh = label;
    return h('form', {
      className: 'control security-form', testid: 'psk-form',
      onsubmit: guarded(error, async () => {
        const chosen = purpose.value;
        if (!await mayReplace(chosen)) return;
        const { data } = await api(path, { method: 'PUT', body: { mode: 'psk', identity: identity.value, purpose: chosen } });
        typed = false;
        // The key is shown before anything else can fail: a redraw that fails must not lose it.
        const shown = secretDialog({
          testid: 'psk-key-dialog', title: `New pre-shared key of ${device.endpoint}`, label: 'Key (hex)', secret: data.key_hex,
          facts: [['Device', device.endpoint], ['Purpose', chosen], ['PSK identity', data.identity]],
        });
        announce(`${device.endpoint}: ${chosen} PSK set, identity ${data.identity}`);
        await draw();
        await shown;
      }),
    },
    h('h3', {}, 'Set or rotate a pre-shared key (PSK)'),
    h('p', { className: 'muted' }, 'Fleet generates the key (16 random bytes) and shows it once. '
      + 'Setting one retires the device\'s earlier credential of that purpose at once.'),
    h('div', { className: 'fields' },
      h('label', { for: 'psk-identity' }, 'PSK identity'), identity,
      h('label', { for: 'psk-purpose' }, 'Purpose'), purpose),
    submit, error);
  }

  function rpkForm() {
    const error = errorSlot('rpk-error');
    const pem = h('textarea', { id: 'rpk-pem', rows: '5', required: true, spellcheck: 'false', className: 'pem',
      placeholder: '-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----' });
    return h('form', {
      className: 'control security-form', testid: 'rpk-form',
      onsubmit: guarded(error, async () => {
        if (!await mayReplace('operational')) return;
        const { data } = await api(path, { method: 'PUT', body: { mode: 'rpk', public_key: pem.value } });
        pem.value = '';
        announce(`${device.endpoint}: public key set, fingerprint ${grouped(data.fingerprint)}`);
        await draw();
      }),
    },
    h('h3', {}, 'Use the device\'s raw public key (RPK)'),
    h('p', { className: 'muted' }, 'Paste its P-256 public key; its private key never leaves the device.'),
    h('div', { className: 'fields' }, h('label', { for: 'rpk-pem' }, 'Public key (PEM)'), pem),
    h('button', { type: 'submit' }, 'Set public key'), error);
  }

  function revokeForm() {
    const error = errorSlot('revoke-error');
    const box = h('div', { className: 'control', testid: 'revoke-control' },
      h('h3', {}, 'Revoke'),
      h('button', {
        type: 'button', className: 'secondary',
        onclick: guarded(error, async () => {
          const agreed = await confirmDialog({
            testid: 'revoke-dialog', title: `Revoke ${device.endpoint}'s credentials?`,
            text: ['Its DTLS sessions end at once and none of its keys completes a handshake again.',
              tenant?.allow_nosec_devices
                ? 'It may then register over plain CoAP, without DTLS, as this city allows.'
                : 'This city refuses devices without DTLS: it cannot register until it has a new credential.'],
            confirm: 'Revoke',
          });
          if (!agreed) return;
          await api(path, { method: 'DELETE' });
          announce(`${device.endpoint}: credentials revoked`);
          await draw();
        }),
      }, 'Revoke credentials'), error);
    const label = refresh;
    refresh = () => {
      label();
      box.hidden = credentials.length === 0;
    };
    return box;
  }

  // Draws what the device holds; `fresh` is its registration, when the caller has just read it.
  async function draw(fresh = registration) {
    const [security, city] = await Promise.all([getJson(path), getJson('/api/v1/tenant')]);
    credentials = security.credentials;
    tenant = city;
    registration = fresh;
    drawFacts();
    if (mayManage && !controls.firstChild) {
      // The forms are drawn once (a redraw must not empty a half-pasted key), for the modes the city allows.
      const modes = tenant.security_modes;
      controls.append(...[
        modes.includes('psk') ? pskForm() : null,
        modes.includes('rpk') ? rpkForm() : null,
        modes.length ? null : h('p', { className: 'muted' }, 'This city allows no DTLS mode: an admin chooses them in City settings.'),
        revokeForm()].filter(Boolean));
    }
    refresh();
  }

  return { draw, body: [facts, controls] };
}
