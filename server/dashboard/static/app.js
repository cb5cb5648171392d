// lrtune dashboard entry point: routes between the job list (/) and a job page (/jobs/ID), and asks for the
// admin key when the service wants one. Nothing about a job is shown until the service accepted the caller.

import { AuthError, el, key } from "./api.js";
import { JobView } from "./job.js";
import { ListView } from "./list.js";

const app = document.getElementById("app");
const login = document.getElementById("login");
const loginWhy = document.getElementById("login-why");
const loginForm = document.getElementById("login-form");
const loginKey = document.getElementById("login-key");
const signout = document.getElementById("signout");
const live = document.getElementById("live");
const banner = document.getElementById("banner");
let view = null;

/** Show the key prompt instead of any data. */
function askForKey(message) {
  if (view) view.stop();
  view = null;
  app.replaceChildren();
  app.hidden = true;
  live.hidden = true;
  banner.hidden = true;
  loginWhy.textContent = message;
  login.dataset.prompts = String(Number(login.dataset.prompts || 0) + 1); // how many times it asked
  login.hidden = false;
  loginForm.hidden = false;
  loginKey.value = "";
  loginKey.focus();
}

/** Handle an auth failure from any view; return true when it was one. */
function onAuthError(err) {
  if (!(err instanceof AuthError)) return false;
  if (err.status === 401) {
    const had = key.get();
    key.clear();
    askForKey(had ? "The service did not accept that key. Enter its admin key." :
      "This lrtune service has an admin key. Enter it to see its jobs.");
  } else if (key.get()) {
    key.clear();
    askForKey("That key is not this service's admin key. Enter the admin key.");
  } else {
    // No key configured on the service, and this browser is not on its machine: a key cannot help here.
    askForKey(`The service refused: ${err.message}`);
    loginForm.hidden = true;
  }
  signout.hidden = true;
  return true;
}

/** The "live" indicator: when the last poll succeeded, or why it failed. */
function onLive(ok, message) {
  live.hidden = false;
  live.classList.toggle("down", !ok);
  live.textContent = ok ? "● live" : "● reconnecting";
  live.title = ok ? `updated ${new Date().toLocaleTimeString()}` : message || "the service did not answer";
  banner.hidden = ok;
  if (!ok) banner.textContent = `Cannot reach the service (${message || "no answer"}); retrying…`;
}

function route() {
  if (view) view.stop();
  login.hidden = true;
  app.hidden = false;
  signout.hidden = !key.get();
  const match = location.pathname.match(/^\/jobs\/([^/]+)\/?$/);
  view = match
    ? new JobView(app, decodeURIComponent(match[1]), onAuthError, onLive)
    : new ListView(app, new URLSearchParams(location.search), onAuthError, onLive);
  view.start();
}

loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = loginKey.value.trim();
  if (!value) return;
  key.set(value);
  loginKey.value = "";
  route();
});

signout.addEventListener("click", () => {
  key.clear();
  route();
});

// In-page navigation for links marked data-nav (plain clicks only: new tabs work as usual).
document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  history.pushState(null, "", url.pathname + url.search);
  window.scrollTo(0, 0);
  route();
});
window.addEventListener("popstate", route);

try {
  route();
} catch (err) {
  app.replaceChildren(el("p", { class: "error" }, `The dashboard failed to start: ${err.message}`));
}
