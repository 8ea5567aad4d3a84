// Building the page from data without ever parsing it as HTML: every
// value goes in as text (textContent or an attribute), never innerHTML.

/** An element: `h('button', {class: 'x', onclick: f}, 'text', child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children; the field being typed in keeps its
 * focus when a live refresh rebuilds it (same id). */
export function put(el, ...children) {
  const active = document.activeElement;
  const focused = active && active.id && el.contains(active) ? active.id : null;
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  if (focused) document.getElementById(focused)?.focus();
}

/** What was typed in fields a live refresh rebuilds, by field id. */
const drafts = new Map();

/** A text field whose value outlives a refresh of the page around it. */
export function draft(attrs) {
  const input = h('input', { type: 'text', ...attrs, value: drafts.get(attrs.id) ?? '' });
  input.addEventListener('input', () => drafts.set(attrs.id, input.value));
  return input;
}

/** Forgets a field's draft (once what it was for is done). */
export function forget(id) { drafts.delete(id); }

/** A time (Unix milliseconds) as people read it. */
export function when(ms) {
  if (ms === undefined || ms === null) return '';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/** A table of rows: `cols` is [[heading, row => cell], ...]. */
export function table(cols, rows, label) {
  return h('table', { 'aria-label': label },
    h('thead', {}, h('tr', {}, cols.map(([head]) => h('th', { scope: 'col' }, head)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, cols.map(([, cell]) => h('td', {}, cell(r)))))));
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element, attributes and text only (as `h`). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
