/* A page while it is shown: its timers, its requests (aborted when it goes) and its cleanups. */

import { ApiError } from './api.js';
import { showBanner } from './dom.js';

export class View {
  constructor() {
    this.alive = true;
    this.controller = new AbortController();
    this.timers = new Set();
    this.cleanups = [];
  }

  /* Run fn now and then every ms after it finishes, until it returns false or the view goes. */
  poll(ms, fn) {
    const tick = async () => {
      if (!this.alive) return;
      let again = true;
      try {
        again = (await fn()) !== false;
        showBanner(null);
      } catch (err) {
        if (!this.alive || err.name === 'AbortError') return;
        if (err instanceof ApiError) {
          if (err.status === 401) return;
          showBanner(`The API answered ${err.status}: ${err.message}. Retrying…`);
        } else {
          showBanner(`Cannot reach the API (${err.message}). Retrying…`);
        }
      }
      if (again && this.alive) {
        const timer = window.setTimeout(() => { this.timers.delete(timer); tick(); }, ms);
        this.timers.add(timer);
      }
    };
    return tick();
  }

  dispose() {
    this.alive = false;
    for (const timer of this.timers) window.clearTimeout(timer);
    this.controller.abort();
    for (const fn of this.cleanups) {
      try { fn(); } catch (e) { /* already gone */ }
    }
  }
}
