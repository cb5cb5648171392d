// Talking to the service: the admin key (session storage, sent only as a bearer header), JSON calls,
// downloads, polling, and the small DOM helpers every view shares.

const KEY_NAME = "lrtune.adminKey";

/** The service refused the credential (401) or the caller (403). */
export class AuthError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

/** Any other error answer. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

async function bodyOf(resp) {
  try {
    return await resp.json();
  } catch {
    return null;
  }
}

/** GET `path` from this service; JSON unless `raw`. Throws AuthError, ApiError or a network TypeError. */
export async function api(path, { raw = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  const k = key.get();
  if (k) headers.Authorization = `Bearer ${k}`;
  const resp = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (resp.status === 401 || resp.status === 403) throw new AuthError(resp.status, await bodyOf(resp));
  if (!resp.ok) throw new ApiError(resp.status, await bodyOf(resp));
  return raw ? resp : resp.json();
}

/** Fetch `path` (with the key) and save the answer as `filename`. */
export async function download(path, filename) {
  const resp = await api(path, { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: filename });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Calls `fn` now and then every `ms` after it settles; pauses while the tab is hidden. */
export class Poller {
  constructor(fn, ms) {
    this.fn = fn;
    this.ms = ms;
    this.timer = null;
    this.stopped = true;
    this.onVisible = () => {
      if (!document.hidden && !this.stopped) this.kick();
    };
  }

  start() {
    this.stopped = false;
    document.addEventListener("visibilitychange", this.onVisible);
    this.kick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
  }

  /** Run now (and reschedule). */
  async kick() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    if (document.hidden) return;
    try {
      await this.fn();
    } finally {
      if (!this.stopped) this.timer = setTimeout(() => this.kick(), typeof this.ms === "function" ? this.ms() : this.ms);
    }
  }
}

/** Create an element: el("a", {href: "/", class: "x"}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** "12 s", "5 min", "3 h", "2 d" since Unix time `t` (seconds). */
export function age(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

export function pct(share, digits = 1) {
  return share === null || share === undefined ? "–" : `${(100 * share).toFixed(digits)}%`;
}

export function int(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export const PHASE_COLORS = {
  warmup: "#8a8f98", explore: "#e8871e", train: "#2f6fdd", anneal: "#8e44ad", schedule: "#1a9c8c", done: "#59606b",
  offline: "#c0392b",
};

export function phaseBadge(phase) {
  return el("span", { class: `badge phase-${phase}` }, phase);
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}` }, status);
}

/** A progress bar with "used / total" beside it. */
export function progress(used, total) {
  const bar = el("span", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total,
    "aria-valuenow": used });
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.min(100, total ? (100 * used) / total : 0).toFixed(1)}%`;
  bar.append(fill);
  return el("span", { class: "progress" }, bar, el("span", { class: "num" }, `${int(used)} / ${int(total)}`));
}
