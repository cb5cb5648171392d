// The job list: sortable columns, status and name filters, server-side pages; refreshed every few seconds.

import { fmtNum } from "./charts.js";
import { Poller, age, api, el, int, pct, phaseBadge, progress, statusBadge } from "./api.js";

const REFRESH_MS = 3000;
const PAGE_SIZES = [25, 50, 100, 200];
// Every job status, as the service defines them (client/protocol.py JOB_STATUSES, written into the page).
const STATUSES = (document.querySelector('meta[name="lrtune-statuses"]')?.content || "").split(",").filter(Boolean);
const DEFAULTS = { sort: "created", order: "desc", offset: 0, limit: 50, status: "", q: "" };

// [header, sort key, first direction when clicked, cell]; "Age" sorts by creation time, youngest first.
const COLUMNS = [
  ["Name", "name", "asc", (j) => el("span", { class: "name" },
    el("a", { href: `/jobs/${j.job_id}`, "data-nav": true, class: "job-link" }, j.name || "(unnamed)"),
    el("span", { class: "id" }, j.job_id))],
  ["Status", "status", "asc", (j) => statusBadge(j.status)],
  ["Progress", "progress", "desc", (j) => progress(j.steps_used, j.total_steps)],
  ["Phase", "phase", "asc", (j) => el("span", {}, phaseBadge(j.phase),
    j.stage === null || j.stage === undefined ? "" : el("span", { class: "muted small" }, ` stage ${j.stage}`))],
  ["LR", "lr", "desc", (j) => el("span", { class: "num" }, fmtNum(j.lr))],
  ["Exploration", "explore", "desc", (j) => el("span", { class: "num" }, pct(j.explore_share))],
  ["Last loss", "loss", "asc", (j) => el("span", { class: "num" }, fmtNum(j.last_loss, 4))],
  ["Age", "created", "desc", (j) => el("span", { class: "num", "data-age": j.created_at,
    title: new Date(j.created_at * 1000).toISOString() }, age(j.created_at))],
];

export class ListView {
  constructor(root, params, onAuthError, onLive) {
    this.root = root;
    this.onAuthError = onAuthError;
    this.onLive = onLive;
    this.state = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) {
      const v = params.get(k);
      if (v !== null) this.state[k] = typeof DEFAULTS[k] === "number" ? Math.max(0, parseInt(v, 10) || 0) : v;
    }
    if (!PAGE_SIZES.includes(this.state.limit)) this.state.limit = DEFAULTS.limit;
    this.poller = new Poller(() => this.refresh(), REFRESH_MS);
  }

  start() {
    document.title = "Jobs · lrtune";
    this.build();
    this.poller.start();
  }

  stop() {
    this.poller.stop();
  }

  build() {
    const s = this.state;
    this.search = el("input", { type: "search", placeholder: "Filter by name or id", value: s.q, "aria-label": "Filter" });
    let debounce = null;
    this.search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this.change({ q: this.search.value.trim(), offset: 0 }), 250);
    });
    const status = el("select", { "aria-label": "Status" },
      ...["", ...STATUSES].map((v) => el("option", { value: v, selected: v === s.status }, v || "any status")));
    status.addEventListener("change", () => this.change({ status: status.value, offset: 0 }));
    const size = el("select", { "aria-label": "Jobs per page" },
      ...PAGE_SIZES.map((n) => el("option", { value: n, selected: n === s.limit }, `${n} per page`)));
    size.addEventListener("change", () => this.change({ limit: parseInt(size.value, 10), offset: 0 }));
    this.head = el("tr");
    this.body = el("tbody");
    this.pager = el("nav", { class: "pager", "aria-label": "Pages" });
    this.count = el("span", { class: "muted" });
    this.root.replaceChildren(
      el("div", { class: "list-head" }, el("h1", {}, "Jobs"), this.count, el("span", { class: "spacer" }),
        this.search, status, size),
      el("div", { class: "card table-wrap" },
        el("table", { class: "jobs", id: "jobs" }, el("thead", {}, this.head), this.body)),
      this.pager,
    );
    this.renderHead();
  }

  renderHead() {
    const s = this.state;
    this.head.replaceChildren(...COLUMNS.map(([label, sortKey, first]) => {
      const active = s.sort === sortKey;
      // The Age column is shown youngest first when the listing is newest first.
      const ascending = sortKey === "created" ? s.order === "desc" : s.order === "asc";
      const ariaSort = active ? (ascending ? "ascending" : "descending") : "none";
      const button = el("button", { type: "button", class: "sort", "data-sort": sortKey },
        label, el("span", { class: "arrow", "aria-hidden": "true" }, active ? (ascending ? " ▲" : " ▼") : ""));
      button.addEventListener("click", () => {
        const order = active ? (s.order === "asc" ? "desc" : "asc") : first;
        this.change({ sort: sortKey, order, offset: 0 });
      });
      return el("th", { "aria-sort": ariaSort, class: `col-${sortKey}` }, button);
    }));
  }

  change(patch) {
    Object.assign(this.state, patch);
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(this.state)) if (v !== DEFAULTS[k]) params.set(k, v);
    const qs = params.toString();
    history.replaceState(null, "", qs ? `/?${qs}` : "/");
    this.renderHead();
    this.poller.kick();
  }

  query() {
    const s = this.state;
    const params = new URLSearchParams({ offset: s.offset, limit: s.limit, sort: s.sort, order: s.order });
    if (s.status) params.set("status", s.status);
    if (s.q) params.set("q", s.q);
    return `/v1/jobs?${params}`;
  }

  async refresh() {
    const asked = this.query();
    let page;
    try {
      page = await api(asked);
    } catch (err) {
      if (this.poller.stopped || this.onAuthError(err)) return;
      this.onLive(false, err.message);
      return;
    }
    if (this.poller.stopped) return; // the user left this page meanwhile
    if (asked !== this.query()) return; // the user changed something meanwhile: the next poll fetches it
    this.onLive(true);
    if (page.jobs.length === 0 && page.total > 0 && this.state.offset > 0) {
      this.change({ offset: Math.max(0, Math.floor((page.total - 1) / this.state.limit) * this.state.limit) });
      return;
    }
    const text = JSON.stringify(page);
    if (text === this.lastPage) {
      for (const node of this.body.querySelectorAll("[data-age]")) node.textContent = age(Number(node.dataset.age));
      return;
    }
    this.lastPage = text;
    this.render(page);
  }

  render(page) {
    const s = this.state;
    this.root.dataset.total = page.total;
    this.count.textContent = `${int(page.total)} job${page.total === 1 ? "" : "s"}`;
    if (!page.jobs.length) {
      const hint = s.q || s.status ? "No job matches." : "No jobs yet. Start one with the client's AutoLRSCallback, or run lrtune demo.";
      this.body.replaceChildren(el("tr", {}, el("td", { colspan: COLUMNS.length, class: "empty" }, hint)));
    } else {
      this.body.replaceChildren(...page.jobs.map((j) => el("tr", { "data-job-id": j.job_id },
        ...COLUMNS.map(([, key, , cell]) => el("td", { class: `col-${key}` }, cell(j))))));
    }
    const pages = Math.max(1, Math.ceil(page.total / s.limit));
    const current = Math.floor(s.offset / s.limit) + 1;
    const go = (n) => () => this.change({ offset: (Math.min(Math.max(n, 1), pages) - 1) * s.limit });
    const btn = (label, n, disabled, name) => el("button", { type: "button", disabled, onclick: go(n), "data-page": name }, label);
    const first = page.total ? s.offset + 1 : 0;
    this.pager.replaceChildren(
      btn("« First", 1, current <= 1, "first"),
      btn("‹ Previous", current - 1, current <= 1, "prev"),
      el("span", { class: "page-info" }, `${int(first)}–${int(s.offset + page.jobs.length)} of ${int(page.total)} · page ${current} of ${pages}`),
      btn("Next ›", current + 1, current >= pages, "next"),
      btn("Last »", pages, current >= pages, "last"),
    );
  }
}
