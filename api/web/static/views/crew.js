// The crew view (issue 15): a placeholder until it is built.
import { h } from '../ui.js';

export async function render(main, params) {
  main.append(h('h1', {}, 'crew'));
}
