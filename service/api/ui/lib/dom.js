/* DOM helpers: elements built with h(), the page's fixed elements, and small shared pieces. */

export const main = document.getElementById('main');
export const nav = document.getElementById('nav');
const banner = document.getElementById('banner');
const announcer = document.getElementById('announce');

/* An element: h('a', { href, text, class, onclick }, ...children). Null, undefined and false
 * attributes and children are left out; text sets textContent (never parsed as HTML). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, ...children);
  return el;
}

export function append(el, ...children) {
  for (const child of [].concat(...children.map((c) => (Array.isArray(c) ? c.flat(Infinity) : [c])))) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/* Said by screen readers (the polite live region). */
export function announce(text) {
  announcer.textContent = '';
  window.setTimeout(() => { announcer.textContent = text; }, 50);
}

export function showBanner(text) {
  banner.hidden = !text;
  banner.textContent = text || '';
}

/* The page's one h1, focusable so that navigation can move the focus to it. */
export function heading(text, ...rest) {
  return h('h1', { tabindex: '-1' }, text, ...rest);
}

/* A scrolling region for narrow windows, reachable with the keyboard. */
export function tableWrap(label, table) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
}

export function headRow(titles) {
  return h('thead', {}, h('tr', {}, titles.map((t) => h('th', { scope: 'col', text: t }))));
}

/* A definition list's rows ([name, value] pairs), each marked data-fact="name". */
export function showFacts(dl, rows) {
  clear(dl);
  for (const [name, value] of rows) {
    append(dl, h('div', { 'data-fact': name.toLowerCase() }, h('dt', { text: name }), h('dd', {}, value)));
  }
}

/* New rows for a table body, keeping the keyboard focus on the same row's link. */
export function replaceRows(tbody, rows, empty) {
  const active = document.activeElement;
  const focusedRow = active && tbody.contains(active) ? active.closest('tr') : null;
  const focusedId = focusedRow ? focusedRow.dataset.id : null;
  clear(tbody);
  append(tbody, rows.length ? rows : [empty]);
  if (focusedId) {
    const again = tbody.querySelector(`tr[data-id="${CSS.escape(focusedId)}"] a`);
    if (again) again.focus();
  }
}

/* Hand a blob to the browser as a download named filename (a link to an object URL). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60000);
}
