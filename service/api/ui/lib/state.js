/* The dashboard's state: the current view, its charts, a message for the sign-in form, and
 * whether the user has navigated (then each new page's heading takes the focus). The browser
 * tests read it as window.dashboard (tests/e2e/test_dashboard.py: the charts' data). */

export const state = { view: null, charts: {}, flash: null, navigated: false };
window.dashboard = state;
