// Forms and dialogs the views share: the API's problem shown beside the control that caused it,
// a confirmation before a change that cuts devices off, and a secret shown once.
import { ApiError } from './api.js';
import { h } from './ui.js';

export function problemText(error) {
  if (error instanceof ApiError) {
    const fields = (error.problem?.errors || []).map((e) => `${e.field}: ${e.message}`).join('; ');
    return fields ? `${error.message} (${fields})` : error.message;
  }
  return error.message || String(error);
}

export function errorSlot(testid) {
  return h('p', { className: 'error', role: 'alert', testid });
}

// A control's action: the API's problem detail, if any, goes in the control's own alert.
export function guarded(error, act) {
  return async (event) => {
    event.preventDefault();
    error.textContent = '';
    try {
      await act();
    } catch (failure) {
      error.textContent = problemText(failure);
    }
  };
}

// A modal <dialog>: the browser keeps the focus inside it, Escape closes it, the rest of the
// page is inert meanwhile. Once closed it leaves the page and the focus goes back where it was.
function modal(testid, title, body, buttons) {
  const returnTo = document.activeElement;
  const titleId = `${testid}-title`;
  const dialog = h('dialog', { className: 'modal', testid, 'aria-labelledby': titleId },
    h('h2', { id: titleId }, title), body, h('div', { className: 'modal-buttons' }, buttons));
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (returnTo && document.contains(returnTo)) returnTo.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

// Asks before a change that takes effect at once; resolves true only for the confirming button.
// The focus starts on Cancel, so a stray Enter changes nothing.
export function confirmDialog({ testid = 'confirm-dialog', title, text, confirm }) {
  return new Promise((resolve) => {
    let answer = false;
    const cancel = h('button', { type: 'button', className: 'secondary', autofocus: true, onclick: () => dialog.close() }, 'Cancel');
    const yes = h('button', { type: 'button', onclick: () => { answer = true; dialog.close(); } }, confirm);
    const dialog = modal(testid, title, [text].flat().map((line) => h('p', {}, line)), [cancel, yes]);
    dialog.addEventListener('close', () => resolve(answer));
  });
}

async function copy(field) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(field.value);
    return;
  }
  // Plain HTTP on the city's network has no Clipboard API: copy the selected field instead.
  field.focus();
  field.select();
  if (!document.execCommand('copy')) throw new Error('the browser refused to copy: select the key and copy it by hand');
}

// A secret Fleet shows once (a PSK it generated): a read-only field, a copy button, and a
// plain warning. Closing the dialog empties the field; nothing keeps the secret afterwards.
export function secretDialog({ testid = 'secret-dialog', title, facts = [], label, secret }) {
  return new Promise((resolve) => {
    const fieldId = `${testid}-value`;
    const field = h('input', { id: fieldId, type: 'text', readonly: true, value: secret, className: 'secret',
      spellcheck: 'false', autocomplete: 'off', testid: `${testid}-value`, onfocus: () => field.select() });
    const copied = h('p', { role: 'status', className: 'muted', testid: `${testid}-copied` });
    const copyButton = h('button', { type: 'button', className: 'secondary', onclick: async () => {
      try {
        await copy(field);
        copied.textContent = 'Copied to the clipboard.';
      } catch (error) {
        copied.textContent = error.message;
      }
    } }, 'Copy key');
    const done = h('button', { type: 'button', onclick: () => dialog.close() }, 'I have copied the key, close');
    const dialog = modal(testid, title, [
      facts.length ? h('dl', { className: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])) : null,
      h('label', { for: fieldId }, label), field,
      h('p', { className: 'warning', testid: `${testid}-warning` },
        'Fleet shows this key only now: it will not be shown again. Copy it into the device (or its '
        + 'provisioning tool) before closing; if it is lost, set a new key.'),
      copied,
    ], [copyButton, done]);
    field.focus();
    dialog.addEventListener('close', () => {
      field.value = '';
      resolve();
    });
  });
}
