// The console's shell: sign-in, the page chosen by the URL's fragment,
// and a long-poll that refreshes the page whenever the broker has news.

import { h, put } from './dom.js';
import { api, ApiError, get, setCsrf, whenSignedOut } from './api.js';
import { pages } from './pages.js';

const $ = (id) => document.getElementById(id);
let session = null;
let refresh = async () => {};
let head = 0;
let generation = 0;

function say(msg, bad = false) {
  const s = $('status');
  s.className = bad ? 'status bad' : 'status';
  s.textContent = msg;
}

function showSignIn(message = '') {
  session = null;
  generation += 1;
  setCsrf(null);
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  put($('main'));
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('credential').focus();
  // Single sign-on from the browser, when the broker offers it.
  get('/ui/api/sso').then((o) => { $('sso').hidden = !(o && o.start); }).catch(() => {});
}

function signedIn(s) {
  session = s;
  setCsrf(s.csrf);
  $('signin').hidden = true;
  $('credential').value = '';
  $('who').textContent = `${s.name} (${s.role})`;
  $('signout').hidden = false;
  const nav = $('nav');
  put(nav, Object.entries(pages).filter(([, p]) => p.may(s)).map(([id, p]) => h('a', { href: `#${id}`, id: `nav-${id}` }, p.title)));
  nav.hidden = false;
  show();
  follow(generation);
}

async function show() {
  if (!session) return;
  // `#page` or `#page?agent=NAME`: a page, and what it starts filtered by.
  const [id, rest = ''] = location.hash.slice(1).split('?', 2);
  const params = new URLSearchParams(rest);
  const page = Object.hasOwn(pages, id) && pages[id].may(session) ? pages[id] : pages.overview;
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.getAttribute('href') === `#${id}`) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = $('main');
  if (main.dataset.page !== (id || 'overview')) say('');
  const ctx = { session, say, params, refresh: () => refresh() };
  const r = page.render(main, ctx);
  refresh = async () => { try { await r(); } catch (e) { say(e.message, true); } };
  document.title = `${page.title} · writ console`;
  await refresh();
  main.dataset.page = id || 'overview';
  main.dataset.ready = String(Date.now());
}

/** Long-polls for news; refreshes the page each time there is some. */
async function follow(gen) {
  while (gen === generation && session) {
    try {
      const n = await get(`/ui/api/news?after=${head}&wait_ms=20000`);
      if (gen !== generation) return;
      if (n.head !== head) {
        head = n.head;
        await refresh();
        $('main').dataset.ready = String(Date.now());
      }
    } catch {
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

async function start() {
  whenSignedOut(() => showSignIn('Your session ended: sign in again.'));
  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const s = await api('POST', '/ui/api/session', { credential: $('credential').value });
      signedIn(s);
    } catch (err) {
      $('signin-error').textContent = `Sign-in refused: ${err.message}`;
    }
  });
  // One sign-out at a time (a double-click sends one request), and a
  // failed one is said so: the session may still be live at the broker.
  $('signout').addEventListener('click', async () => {
    const button = $('signout');
    if (button.disabled) return;
    button.disabled = true;
    try {
      await api('DELETE', '/ui/api/session');
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        say(`Sign-out failed: ${err.message}`, true);
        return;
      }
      // 401: the session had ended already.
    } finally {
      button.disabled = false;
    }
    say('');
    showSignIn('Signed out.');
  });
  window.addEventListener('hashchange', () => show());
  try {
    signedIn(await get('/ui/api/session'));
  } catch {
    showSignIn();
  }
}

start();
