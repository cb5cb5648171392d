// One job: loss and LR over the steps, the exploration split, every stage's candidates with forecasts and
// bands, and the GP posterior over log-LR; for a job that plans its budget (the plan preset), the current
// plan: the loss model's fit, its predicted loss under the plan with a 90% band, and the planned LR.
// Polls the job's head and refetches the rest when it changed. The loss and LR charts share a step axis that
// zooms, reads out and toggles series (zoom.js); the loss chart can be smoothed.

import { drawChart, fmtNum, legend, ramp } from "./charts.js";
import { SharedAxis, ZoomChart, smooth } from "./zoom.js";
import { ApiError, PHASE_COLORS, Poller, age, api, download, el, int, pct, phaseBadge, progress, statusBadge } from "./api.js";

const RUNNING_MS = 1500;
const FINISHED_MS = 6000;
const Z90 = 1.6448536;
const COLORS = { train: "#2f6fdd", val: "#d6336c", rolled: "#e8871e", bound: "#9aa1ab", next: "#59606b", model: "#1b8a4a" };
/** EMA weights per step the loss chart offers (0: off, the default). */
const SMOOTHING = [[0, "off"], [0.8, "0.8 (~5 steps)"], [0.9, "0.9 (~10 steps)"], [0.95, "0.95 (~20 steps)"],
  [0.98, "0.98 (~50 steps)"], [0.99, "0.99 (~100 steps)"]];

/** What a rolled-back stretch was, for the readout: "stage 2 candidate #1, LR 0.05". */
function rolledLabel(s) {
  const known = (v) => v !== null && v !== undefined;
  const cooldown = s.shape !== "constant" && s.curve_to === 0 ? "cooldown probe of " : "";
  const what = known(s.stage) && known(s.candidate) ? `${cooldown}stage ${s.stage} candidate #${s.candidate}`
    : !known(s.stage) && s.phase === "explore" ? "LR range sweep" : s.phase;
  const lr = s.shape === "constant" ? fmtNum(s.lr) : `${fmtNum(s.lr)}→${fmtNum(s.lr_end)}`;
  return `rolled back: ${what}, LR ${lr}`;
}

/** [[step, lr], ...] over a segment (the service's own points: two when constant), then a null to break the line. */
function lrPoints(seg) {
  const pts = (seg.lr_points || []).map((p) => [p[0], p[1]]);
  if (pts.length) pts.push(null);
  return pts;
}

function card(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

function stat(label, value, extra, attrs = {}) {
  return el("div", { class: "stat", ...attrs }, el("div", { class: "label" }, label), el("div", { class: "value" }, value),
    extra ? el("div", { class: "extra" }, extra) : null);
}

/** A 90% band [lo, hi] as text, its low end kept at or above the loss floor (when the job has one). */
function bandText(band, floor, digits = 4) {
  if (!band) return "–";
  const lo = floor === null || floor === undefined ? band[0] : Math.max(band[0], floor);
  return `${fmtNum(lo, digits)} – ${fmtNum(band[1], digits)}`;
}

/** The plan's predicted final loss in one phrase: "0.123 ± 0.01 (90% band 0.11 – 0.14)". */
function finalText(plan) {
  return `${fmtNum(plan.final_loss, 4)} ± ${fmtNum(plan.final_std, 2)}` + (plan.band90 ? ` (90% band ${bandText(plan.band90)})` : "");
}

export class JobView {
  constructor(root, jobId, onAuthError, onLive) {
    this.root = root;
    this.jobId = jobId;
    this.onAuthError = onAuthError;
    this.onLive = onLive;
    this.info = null;
    this.schedule = null;
    this.posterior = null;
    this.posteriorKey = null;
    this.pinnedStage = null;
    this.logLoss = localStorage.getItem("lrtune.logLoss");
    this.smoothing = SMOOTHING.some(([w]) => String(w) === localStorage.getItem("lrtune.smoothing"))
      ? Number(localStorage.getItem("lrtune.smoothing")) : 0;
    this.stepAxis = new SharedAxis(); // the loss and LR charts' zoom and hover, kept across re-renders
    this.hidden = { loss: new Set(), lr: new Set() }; // the series the user hid
    this.poller = new Poller(() => this.refresh(), () => (this.info && this.info.status !== "running" ? FINISHED_MS : RUNNING_MS));
    this.onResize = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.render(), 150);
    };
  }

  start() {
    this.root.replaceChildren(el("p", { class: "muted" }, "Loading job…"));
    window.addEventListener("resize", this.onResize);
    this.poller.start();
  }

  stop() {
    this.poller.stop();
    window.removeEventListener("resize", this.onResize);
  }

  base() {
    return `/dashboard/api/jobs/${encodeURIComponent(this.jobId)}`;
  }

  /** True once the user navigated away: answers still in flight must not touch the page. */
  get gone() {
    return this.poller.stopped;
  }

  async refresh() {
    try {
      const info = await api(this.base());
      if (this.gone) return;
      const changed = !this.info || info.updated_at !== this.info.updated_at || info.status !== this.info.status;
      if (changed || !this.schedule) {
        const schedule = await api(`${this.base()}/schedule`);
        if (this.gone) return;
        this.info = info;
        this.schedule = schedule;
        await this.fetchPosterior();
        if (this.gone) return;
        this.render();
      } else {
        this.info = info;
        this.renderAges();
      }
      this.onLive(true);
    } catch (err) {
      if (this.gone) return;
      if (this.onAuthError(err)) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 422)) {
        this.poller.stop();
        this.root.replaceChildren(el("div", { class: "card" }, el("h1", {}, "Job not found"),
          el("p", {}, `No job with id ${this.jobId}: `, err.message), el("p", {}, el("a", { href: "/", "data-nav": true }, "← All jobs"))));
        return;
      }
      this.onLive(false, err.message);
    }
  }

  /** The stage shown in detail: the one picked, else the latest that has candidates. */
  stageIndex() {
    const stages = this.schedule ? this.schedule.stages : [];
    if (this.pinnedStage !== null && this.pinnedStage < stages.length) return this.pinnedStage;
    for (let i = stages.length - 1; i >= 0; i -= 1) if (stages[i].candidates.length) return i;
    return stages.length ? stages.length - 1 : null;
  }

  async fetchPosterior() {
    const i = this.stageIndex();
    const st = i === null ? null : this.schedule.stages[i];
    const forecasts = st ? st.candidates.map((c) => c.forecast).filter((f) => f !== null) : [];
    const n = forecasts.length;
    const wanted = `${i}:${forecasts.join(",")}`; // refetch when the stage's forecasts change
    if (wanted === this.posteriorKey) return;
    this.posterior = n ? await api(`${this.base()}/posterior?stage=${i}&points=96`) : null;
    this.posteriorKey = wanted;
  }

  async pickStage(i) {
    this.pinnedStage = i;
    try {
      await this.fetchPosterior();
    } catch (err) {
      if (!this.gone && !this.onAuthError(err)) this.onLive(false, err.message);
    }
    if (!this.gone) this.render();
  }

  renderAges() {
    for (const node of this.root.querySelectorAll("[data-age]")) node.textContent = age(Number(node.dataset.age));
  }

  render() {
    if (!this.info || !this.schedule) return;
    const info = this.info;
    const sched = this.schedule;
    document.title = `${info.name || info.job_id} · lrtune`;
    const keepScroll = window.scrollY;
    this.charts = [];
    this.stepAxis.charts = [];
    const exports = el("div", { class: "exports" }, el("span", { class: "muted small" }, "Export"),
      ...[["JSON", "json", "schedule.json"], ["CSV", "csv", "schedule.csv"], ["LambdaLR", "lambdalr", "lambdalr.json"]].map(
        ([label, fmt, suffix]) => el("button", { type: "button", "data-export": fmt,
          title: `GET .../schedule?format=${fmt}`,
          onclick: () => download(`${this.base()}/schedule?format=${fmt}`, `lrtune-${info.job_id}-${suffix}`)
            .catch((err) => this.onLive(false, `export failed: ${err.message}`)) }, label)));
    const page = el("div", {
      class: "job", "data-job-id": info.job_id, "data-status": info.status, "data-steps-used": info.steps_used,
      "data-segments": sched.segments.length, "data-stages": sched.stages.length, "data-updated-at": info.updated_at,
    },
    el("div", { class: "crumbs" }, el("a", { href: "/", "data-nav": true }, "← All jobs")),
    el("div", { class: "job-head" }, el("h1", {}, info.name || "(unnamed job)"), el("code", { class: "id" }, info.job_id),
      statusBadge(info.status), el("span", { class: "spacer" }), exports),
    this.summary(info, sched),
    this.split(sched),
    card("Loss and learning rate", this.lossAndLr(info, sched)),
    card("Stages", this.stages(info, sched)),
    this.config(info));
    this.root.replaceChildren(page);
    for (const fn of this.charts) fn();
    window.scrollTo(0, keepScroll);
  }

  summary(info, sched) {
    return el("div", { class: "stats" },
      stat("Progress", `${int(info.steps_used)} / ${int(info.total_steps)}`,
        el("span", { class: "progress" }, progress(info.steps_used, info.total_steps).firstChild,
          ` ${pct(info.steps_used / info.total_steps)}`)),
      stat("Phase", phaseBadge(info.phase), info.stage === null ? "" : `stage ${info.stage}`),
      stat("Current LR", fmtNum(info.lr), info.phase === "done" ? "finished" : "open segment"),
      stat("Winner LR", fmtNum(sched.winner_lr), "latest stage winner"),
      stat("Last loss", fmtNum(info.last_loss, 4), "training loss"),
      ...(sched.plan && sched.plan.final_loss !== null ? [stat("Predicted final loss", fmtNum(sched.plan.final_loss, 4),
        `${sched.plan.band90 ? `90% band ${bandText(sched.plan.band90, null, 3)}` : `± ${fmtNum(sched.plan.final_std, 2)}`} at step ${int(sched.plan.end)}`,
        { "data-plan-final": sched.plan.final_loss, title: "the loss model's prediction of the loss at the end of the budget, under the current plan" })] : []),
      stat("Exploration", pct(info.explore_share), `${int(sched.explore_steps)} steps` +
        (info.config.explore_cap === null ? "" : ` (cap ${pct(info.config.explore_cap, 0)})`)),
      stat("Age", el("span", { "data-age": info.created_at }, age(info.created_at)),
        el("span", {}, "updated ", el("span", { "data-age": info.updated_at }, age(info.updated_at)), " ago")));
  }

  split(sched) {
    const total = sched.total_steps;
    const probed = sched.stages.some((st) => st.candidates.some((c) => c.probe_loss !== null && c.probe_loss !== undefined));
    const parts = [
      ["exploration, kept", sched.explore_steps - sched.wasted_steps, "explore-kept"],
      ["exploration, rolled back", sched.wasted_steps, "explore-rolled"],
      ["exploitation", sched.steps_used - sched.explore_steps, "exploit"],
      ["budget left", total - sched.steps_used, "budget-left"],
    ];
    const bar = el("div", { class: "split-bar", id: "split", role: "img",
      "aria-label": parts.map(([l, n]) => `${l}: ${n} steps`).join(", ") });
    for (const [label, n, cls] of parts) {
      if (n <= 0) continue;
      const seg = el("span", { class: `part ${cls}`, title: `${label}: ${int(n)} steps (${pct(n / total)})`, "data-steps": n });
      seg.style.width = `${((100 * n) / total).toFixed(3)}%`;
      bar.append(seg);
    }
    const keys = el("ul", { class: "split-legend" }, ...parts.map(([label, n, cls]) => el("li", {},
      el("span", { class: `key ${cls}` }), `${label} `, el("strong", {}, int(Math.max(n, 0))), el("span", { class: "muted" }, ` (${pct(Math.max(n, 0) / total)})`))));
    return card("Exploration and exploitation",
      el("p", { class: "muted small" }, `${pct(sched.explore_share)} of the ${int(total)}-step budget went to exploring (${sched.sweep ? "the LR range sweep, " : ""}candidate LRs${probed ? " and their cooldown probes" : ""}); `,
        `${pct(sched.wasted_share)} was rolled back (everything but each stage's winning candidate).`),
      bar, keys);
  }

  lossAndLr(info, sched) {
    const segs = sched.segments;
    const total = sched.total_steps;
    const kept = [];
    const rolled = [];
    const val = [];
    const jumps = []; // the kept trajectory resumes after rolled-back candidates: dotted across the gap
    let keptEnd = null;
    for (const s of segs) {
      const pts = s.curve.filter((p) => p[1] !== null);
      if (s.rolled_back) {
        const label = rolledLabel(s);
        if (pts.length) rolled.push(...pts.map((p) => [p[0], p[1], label]), null);
      }      else if (pts.length) {
        const last = kept.length ? kept[kept.length - 1] : null;
        if (last && keptEnd !== null && s.start_step > keptEnd) {
          kept.push(null);
          jumps.push(last, pts[0], null);
        }
        kept.push(...pts);
        keptEnd = s.start_step + s.steps;
      }
      if (!s.rolled_back && s.val.length) val.push(...s.val.filter((p) => p[1] !== null), null);
    }
    const stageMarks = sched.stages.map((st) => [st.start_step, sched.stages.length <= 14 || st.index % 2 === 0 ? `S${st.index}` : ""]);
    const anneal = segs.find((s) => s.phase === "anneal");
    if (anneal) stageMarks.push([anneal.start_step, "anneal"]);
    const lossVals = [...kept, ...rolled, ...val].filter((p) => p && p[1] > 0).map((p) => p[1]);
    const autoLog = lossVals.length > 1 && Math.max(...lossVals) / Math.min(...lossVals) > 8;
    const logLoss = this.logLoss === null ? autoLog : this.logLoss === "1";
    const toggle = el("label", { class: "toggle small" }, el("input", { type: "checkbox", checked: logLoss,
      onchange: (e) => { this.logLoss = e.target.checked ? "1" : "0"; localStorage.setItem("lrtune.logLoss", this.logLoss); this.render(); } }), " log loss axis");
    const smoothing = this.smoothing;
    const smoother = el("label", { class: "toggle small", title: "exponential moving average of the training loss over steps; each stretch is smoothed on its own" },
      "smoothing ", el("select", { id: "loss-smoothing", onchange: (e) => {
        this.smoothing = Number(e.target.value);
        localStorage.setItem("lrtune.smoothing", String(this.smoothing));
        this.render();
      } }, ...SMOOTHING.map(([w, label]) => el("option", { value: w, selected: w === smoothing }, label))));

    // LR: one line per phase; rolled-back candidates dashed; the open segment dotted.
    const byPhase = {};
    const rolledLr = [];
    for (const s of segs) {
      if (s.rolled_back) {
        const label = rolledLabel(s);
        rolledLr.push(...lrPoints(s).map((p) => p && [p[0], p[1], label]));
      } else (byPhase[s.phase] ||= []).push(...lrPoints(s));
    }
    const open = sched.open && !sched.open.done ? lrPoints(sched.open) : [];
    const cfg = info.config;
    const bounds = [[0, cfg.min_lr], [total, cfg.min_lr], null, [0, cfg.max_lr], [total, cfg.max_lr]];
    const phases = Object.keys(byPhase);

    // The plan (plan preset): the model along the kept line, its prediction under the plan with a 90% band,
    // and the planned LR over the rest of the budget. Absent for greedy, paper and fixed schedules.
    const plan = sched.plan || null;
    const lossPlan = [];
    const lrPlan = [];
    if (plan) {
      const fitted = plan.fitted || [];
      const predicted = plan.predicted || [];
      const joint = fitted.length && predicted.length ? [fitted[fitted.length - 1]] : [];
      // On a log axis a band that reaches the floor (0) runs off the bottom of the chart.
      const low = (p) => (logLoss && !(p[2] > 0) ? p[1] * 1e-3 : p[2]);
      lossPlan.push(
        { kind: "area", name: "plan-band", color: COLORS.model, opacity: 0.14, noExtent: true, points: predicted.map((p) => [p[0], low(p), p[3]]),
          label: "90% band" },
        { kind: "line", name: "plan-fitted", color: COLORS.model, width: 1.3, opacity: 0.95, points: fitted, label: "loss model fitted along the kept line" },
        { kind: "line", name: "plan-predicted", color: COLORS.model, width: 2, dash: "6 4", points: [...joint, ...predicted.map((p) => [p[0], p[1]])],
          label: "predicted loss under the plan" },
        { kind: "points", name: "plan-final", color: COLORS.model, r: 3.2, points: predicted.length ? [predicted[predicted.length - 1]] : [],
          title: (p) => `step ${int(p[0])}: predicted final loss ${finalText(plan)}` },
      );
      lrPlan.push({ kind: "line", name: "plan-lr", color: COLORS.model, dash: "6 4", width: 2, digits: 3,
        points: plan.lr.length ? [...plan.lr, [plan.end, plan.lr[plan.lr.length - 1][1]]] : [], label: "planned LR for the rest of the budget" });
      stageMarks.push([plan.start, "plan"]);
    }
    const lossHost = el("div", { class: "chart-host", id: "chart-loss" });
    const lrHost = el("div", { class: "chart-host", id: "chart-lr" });
    const margin = { left: 70, right: 18 };
    const lossChart = new ZoomChart(lossHost, {
      name: "loss", height: 290, margin, title: "training and validation loss against step",
      x: { domain: [0, total], label: "gradient steps used (exploration included)" }, y: { label: "loss", log: logLoss },
      empty: "no losses reported yet",
      layers: [
        { kind: "vlines", name: "stages", color: "#b6bcc6", points: stageMarks },
        // every rolled-back stretch is its own path, smoothed on its own: never joined to the kept line
        { kind: "line", name: "rolled-back", color: COLORS.rolled, opacity: 0.55, width: 1.3, split: true, points: smooth(rolled, smoothing),
          label: "rolled-back candidates" },
        { kind: "line", name: "resume", color: COLORS.train, width: 1.2, dash: "1 3", opacity: 0.8, points: jumps },
        ...(smoothing ? [{ kind: "line", name: "train-raw", color: COLORS.train, width: 1, opacity: 0.28, points: kept, label: "training loss (raw)" }] : []),
        { kind: "line", name: "train", color: COLORS.train, width: 1.8, points: smooth(kept, smoothing),
          label: smoothing ? `training loss (EMA ${smoothing})` : "training loss" },
        { kind: "line", name: "val-line", color: COLORS.val, width: 1.2, opacity: 0.7, points: val },
        { kind: "points", name: "val", color: COLORS.val, r: 2.6, points: val, label: "validation loss",
          title: (p) => `step ${p[0]}: validation loss ${fmtNum(p[1], 4)}` },
        ...lossPlan,
      ],
    }, this.stepAxis, this.hidden.loss);
    const lrChart = new ZoomChart(lrHost, {
      name: "lr", height: 210, margin, title: "learning rate against step, log scale",
      x: { domain: [0, total], label: "gradient steps used (exploration included)" }, y: { label: "learning rate", log: true, pad: 0.08 },
      empty: "no segments yet",
      layers: [
        { kind: "line", name: "bounds", color: COLORS.bound, dash: "2 4", width: 1, points: bounds, label: "LR search range", readout: false },
        { kind: "vlines", name: "stages", color: "#b6bcc6", points: stageMarks.map(([x]) => [x, ""]) },
        { kind: "line", name: "rolled-back", color: COLORS.rolled, dash: "4 3", width: 1.4, opacity: 0.8, split: true, points: rolledLr,
          label: "rolled-back candidates", digits: 3 },
        ...lrPlan,
        ...phases.map((ph) => ({ kind: "line", name: `lr-${ph}`, color: PHASE_COLORS[ph] || "#333", width: 2.2, points: byPhase[ph], label: `LR (${ph})`, digits: 3 })),
        { kind: "line", name: "open", color: COLORS.next, dash: "1 3", width: 2, points: open, label: "next segment (proposed)", digits: 3 },
      ],
    }, this.stepAxis, this.hidden.lr);
    this.charts.push(() => lossChart.draw(), () => lrChart.draw());
    const lossLegend = lossChart.legend([
      { label: smoothing ? "training loss (kept, smoothed)" : "training loss (kept)", color: COLORS.train, series: ["train", "train-raw"] },
      ...(jumps.length ? [{ label: "resumes after rollback", color: COLORS.train, kind: "dash", series: ["resume"] }] : []),
      { label: "rolled-back candidates", color: COLORS.rolled, opacity: 0.6, series: ["rolled-back"] },
      { label: "validation loss", color: COLORS.val, kind: "dot", series: ["val", "val-line"] },
      ...(plan ? [{ label: "loss model fit", color: COLORS.model, series: ["plan-fitted"] },
        { label: "predicted under the plan", color: COLORS.model, kind: "dash", series: ["plan-predicted", "plan-final"] },
        { label: "90% band", color: COLORS.model, kind: "band", series: ["plan-band"] }] : []),
      { label: "stage start", color: "#b6bcc6", kind: "dash", series: ["stages"] },
    ]);
    const lrLegend = lrChart.legend([
      ...phases.map((ph) => ({ label: ph === "explore" ? "explore (winner kept)" : ph, color: PHASE_COLORS[ph], series: [`lr-${ph}`] })),
      { label: "rolled-back candidates", color: COLORS.rolled, kind: "dash", series: ["rolled-back"] },
      ...(open.length ? [{ label: "next segment", color: COLORS.next, kind: "dash", series: ["open"] }] : []),
      ...(plan ? [{ label: "planned LR (rest of budget)", color: COLORS.model, kind: "dash", series: ["plan-lr"] }] : []),
      { label: "search range", color: COLORS.bound, kind: "dash", series: ["bounds"] },
    ]);
    const planLine = !plan ? null : el("p", { class: "plan-line small", "data-plan-start": plan.start, "data-plan-end": plan.end },
      ...(sched.done ? [el("strong", {}, "Last plan"), `, from step ${int(plan.start)}: the LR `]
        : [el("strong", {}, "Plan"), ` from step ${int(plan.start)} (re-planned as the job runs): the LR `]),
      plan.lr.length ? `goes from ${fmtNum(plan.lr[0][1])} to ${fmtNum(plan.lr[plan.lr.length - 1][1])} by step ${int(plan.end)}` : "is not known yet",
      plan.final_loss === null ? "; the loss model cannot predict the final loss yet." :
        `; the loss model predicts a final loss of ${finalText(plan)}. The dashed lines are predictions, not observations.`);
    return el("div", { class: "timeline" },
      planLine,
      el("p", { class: "muted small chart-hint" }, "Drag across a chart to zoom into those steps (both charts follow), double-click to zoom out; ",
        "hover for the values at a step; click a legend entry to hide or show it."),
      el("div", { class: "chart-head" }, el("h3", {}, "Loss"), lossLegend, el("span", { class: "spacer" }), smoother, toggle), lossHost,
      el("div", { class: "chart-head" }, el("h3", {}, "Learning rate (log scale)"), lrLegend), lrHost);
  }

  stages(info, sched) {
    const sweep = sched.sweep;
    const sweepLine = !sweep ? null : el("p", { class: "muted small", "data-sweep": sweep.lr === null ? "running" : "done" },
      sweep.lr === null ? "The LR range sweep runs first: the LR rises over the whole range, and the weights go back afterwards." :
        `LR range sweep: ${int(sweep.steps)} steps (rolled back), suggested LR ${fmtNum(sweep.lr)}; the first stage's search is centred there.`);
    if (!sched.stages.length) {
      return el("div", {}, el("p", { class: "muted" }, info.config.strategy === "autolrs" ? "No stage has started yet." :
        `This job follows a fixed ${info.config.strategy} schedule: it has no search stages.`), sweepLine);
    }
    const current = this.stageIndex();
    const rows = sched.stages.map((st) => {
      const pick = () => this.pickStage(st.index);
      return el("tr", { class: st.index === current ? "selected" : "", "data-stage": st.index, onclick: pick },
        el("td", {}, el("button", { type: "button", class: "link", onclick: (e) => { e.stopPropagation(); pick(); } }, `Stage ${st.index}`)),
        el("td", { class: "num" }, int(st.start_step)),
        st.kind === "plan" ? el("td", { class: "num", title: "steps from the stage start to the end of the budget: candidates are judged by the loss predicted there" },
          `${int(st.tau)} (to end)`) : el("td", { class: "num" }, int(st.tau)),
        el("td", { class: "num" }, int(st.cand_steps)), el("td", {}, st.objective), el("td", {}, st.warm ? "warm" : "cold"),
        el("td", { class: "num" }, st.candidates.length), el("td", { class: "num" }, fmtNum(st.winner_lr)), el("td", {}, st.status));
    });
    const table = el("table", { class: "stages" },
      el("thead", {}, el("tr", {}, ...["Stage", "Start step", "τ (steps)", "Candidate steps", "Objective", "Start", "Candidates", "Winner LR", "Status"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows));
    const follow = this.pinnedStage === null ? el("span", { class: "muted small" }, "Showing the latest stage; click a stage to pin it.")
      : el("button", { type: "button", class: "link small", onclick: () => this.pickStage(null) }, "Follow the latest stage");
    return el("div", {}, sweepLine, el("div", { class: "table-wrap" }, table), el("div", { class: "stage-pick" }, follow),
      current === null ? null : this.stageDetail(info, sched, sched.stages[current]));
  }

  stageDetail(info, sched, st) {
    const cfg = info.config;
    const segById = new Map(sched.segments.map((s) => [s.segment_id, s]));
    // Candidates coloured by LR rank within the stage: low LRs dark, high LRs light.
    const order = st.candidates.map((c) => c.lr).sort((a, b) => a - b);
    const colorOf = (lr) => ramp(order.length > 1 ? 0.02 + (0.83 * order.indexOf(lr)) / (order.length - 1) : 0.4);
    const useVal = st.objective === "val";
    // A plan-kind stage (plan preset) judges each candidate by the final loss the loss model predicts for it
    // under its own best plan: those values sit at the end of the budget (tau steps into the stage), with no
    // extrapolation line from the short curve, since they are not a forecast of that curve.
    const planKind = st.kind === "plan";
    const floor = planKind ? cfg.loss_floor : null;
    const bandOf = (c) => (c.band90 && floor !== null && floor !== undefined ? [Math.max(c.band90[0], floor), c.band90[1]] : c.band90);
    const valueName = planKind ? "predicted final loss" : "forecast";
    const lines = [];
    const connectors = [];
    const forecasts = [];
    const nf = st.candidates.filter((c) => c.forecast !== null).length;
    const dodge = 1 + Math.min(0.035, 0.25 / Math.max(nf, 1)); // factor between neighbouring forecast markers
    let fi = 0;
    for (const c of st.candidates) {
      const seg = segById.get(c.segment_id);
      const start = seg ? seg.start_step : (c.observed.length ? c.observed[0][0] - 1 : 0);
      const series = useVal && seg && seg.val.length ? seg.val : c.observed;
      const pts = series.filter((p) => p && p[1] !== null).map((p) => [p[0] - start, p[1]]);
      const color = colorOf(c.lr);
      lines.push({ kind: "line", name: `cand-${c.index}`, color, width: c.winner ? 3 : 1.7, points: pts,
        label: `candidate ${c.index}, LR ${fmtNum(c.lr)}` });
      if (c.forecast !== null) {
        // Every forecast is at step tau: spread the markers a little sideways so that their bands stay apart.
        const at = st.tau * dodge ** (fi - (nf - 1) / 2);
        fi += 1;
        const band = bandOf(c) || [null, null];
        forecasts.push([at, c.forecast, band[0], band[1], { color, winner: c.winner, c }]);
        if (pts.length && !planKind) connectors.push(pts[pts.length - 1], [at, c.forecast], null);
      }
    }
    const tip = (p) => {
      const c = p[4].c;
      const band = bandOf(c);
      return `candidate ${c.index}: LR ${fmtNum(c.lr)}, ${valueName} ${fmtNum(c.forecast, 4)} ± ${fmtNum(c.std, 2)}` +
        (planKind ? ` (at step ${int(sched.total_steps)}, under its own best plan)` : "") +
        (band ? `, 90% band [${fmtNum(band[0], 4)}, ${fmtNum(band[1], 4)}]` : "") +
        (c.probe_loss != null ? `, after cooldown ${fmtNum(c.probe_loss, 4)}` : "") + (c.winner ? " (winner)" : "") + (c.diverged ? " (diverged)" : "");
    };
    const candHost = el("div", { class: "chart-host", id: "chart-candidates" });
    const postHost = el("div", { class: "chart-host", id: "chart-posterior" });
    const post = this.posterior && this.posterior.stage === st.index && this.posterior.lr ? this.posterior : null;
    const postLayers = [];
    let yDomain = null;
    // The points the GP was fitted on (its own quantity, with bands kept above the loss floor), else the forecasts.
    const byIndex = new Map(st.candidates.map((c) => [c.lr, c]));
    const byLr = post && post.observed
      ? post.observed.map(([lr, y, lo, hi]) => [lr, y, lo, hi, { color: colorOf(lr), winner: (byIndex.get(lr) || {}).winner, c: byIndex.get(lr) || { index: "?", lr } }])
      : st.candidates.filter((c) => c.forecast !== null).map((c) => {
        const band = bandOf(c);
        return [c.lr, c.forecast, band ? band[0] : null, band ? band[1] : null, { color: colorOf(c.lr), winner: c.winner, c }];
      });
    const quantity = post && post.quantity ? post.quantity : planKind ? "predicted final loss" : `forecast ${st.objective} loss at τ`;
    if (post) {
      const band = post.lr.map((lr, i) => [lr, post.lo90 ? post.lo90[i] : post.mean[i] - Z90 * post.std[i], post.hi90 ? post.hi90[i] : post.mean[i] + Z90 * post.std[i]]);
      postLayers.push({ kind: "area", name: "posterior-band", color: "#2f6fdd", opacity: 0.16, points: band });
      postLayers.push({ kind: "line", name: "posterior-mean", color: "#2f6fdd", width: 2, points: post.lr.map((lr, i) => [lr, post.mean[i]]), label: "GP posterior mean" });
      // Frame the mean and the candidates; a band far wider than that is clipped (it says "unknown" there).
      const ys = [...post.mean, ...byLr.flatMap((p) => [p[1], p[2], p[3]])].filter((v) => v !== null && Number.isFinite(v));
      const lo = Math.min(...ys);
      const hi = Math.max(...ys);
      const padY = (hi - lo || Math.abs(hi) * 0.1 || 1) * 0.25;
      yDomain = [lo - padY, hi + padY];
    }
    const range = st.search_range ? st.search_range.map((u) => cfg.min_lr * (cfg.max_lr / cfg.min_lr) ** u) : null;
    if (range && st.warm) postLayers.unshift({ kind: "vlines", name: "search-range", color: "#8a8f98", points: [[range[0], "search"], [range[1], ""]] });
    postLayers.push({ kind: "errorbars", name: "forecasts", color: "#333", r: 4.5, points: byLr, title: tip });
    // Predicted final losses can have bands far wider than the candidates' curves: frame the curves and the
    // predictions, and let such a band run off the chart (the table gives its numbers).
    let candY = null;
    if (planKind) {
      const ys = [...lines.flatMap((l) => l.points.map((p) => p[1])), ...forecasts.map((f) => f[1])].filter((v) => Number.isFinite(v));
      if (ys.length) {
        const lo = Math.min(...ys);
        const hi = Math.max(...ys);
        const padY = (hi - lo || Math.abs(hi) * 0.1 || 1) * 0.25;
        candY = [lo - padY, hi + padY];
      }
    }
    const candX = planKind
      ? `steps into the stage, log scale (predicted final losses at the end of the budget, step ${int(sched.total_steps)})`
      : `steps into the stage, log scale (forecast at τ = ${st.tau})`;
    this.charts.push(
      () => drawChart(candHost, {
        name: "candidates", height: 260, title: `stage ${st.index}: candidate losses and ${planKind ? "predicted final losses" : "forecasts"}`,
        x: { domain: [1, st.tau * dodge ** ((nf - 1) / 2 + 2)], log: true, label: candX },
        y: { label: useVal ? "validation loss" : "training loss", domain: candY }, empty: "no candidate has run yet",
        layers: [...(planKind ? [{ kind: "vlines", name: "budget-end", color: "#8a8f98", labelAnchor: "end", points: [[st.tau, "end of budget"]] }] : []),
          ...lines, { kind: "line", name: "extrapolation", color: "#9aa1ab", dash: "3 3", width: 1.2, points: connectors },
          { kind: "errorbars", name: planKind ? "final-losses" : "forecasts", color: "#333", r: 4.5, points: forecasts, title: tip }],
      }),
      () => drawChart(postHost, {
        name: "posterior", height: 260, title: `stage ${st.index}: ${quantity} against LR with the GP posterior`,
        x: { domain: [cfg.min_lr, cfg.max_lr], log: true, label: "learning rate (log scale)" },
        y: { label: quantity, domain: yDomain }, empty: "no forecast yet",
        layers: postLayers,
      }),
    );
    const candLegend = legend([
      ...st.candidates.map((c) => ({ label: `#${c.index} ${fmtNum(c.lr)}${c.winner ? " ★" : ""}${c.diverged ? " ✕" : ""}`, color: colorOf(c.lr) })),
      { label: planKind ? "predicted final loss ± 90% band" : "forecast ± 90% band", color: "#333", kind: "dot" },
    ]);
    const postLegend = legend([
      { label: "posterior mean", color: "#2f6fdd" }, { label: "90% band", color: "#2f6fdd", kind: "band" },
      { label: planKind ? "predicted final loss ± 90%" : "candidate forecast ± 90%", color: "#333", kind: "dot" }, { label: "winner", color: "#333", kind: "ring" },
    ]);
    const winner = st.candidates.find((c) => c.winner);
    const rows = st.candidates.map((c) => el("tr", { class: c.winner ? "winner" : "", "data-candidate": c.index },
      el("td", {}, el("span", { class: "dot", "data-color": colorOf(c.lr) }), `#${c.index}`), el("td", { class: "num" }, fmtNum(c.lr)),
      el("td", { class: "num" }, int(c.steps)), el("td", { class: "num" }, fmtNum(c.first_loss, 4)), el("td", { class: "num" }, fmtNum(c.last_loss, 4)),
      el("td", { class: "num" }, fmtNum(c.forecast, 4)), el("td", { class: "num" }, fmtNum(c.std, 2)),
      el("td", { class: "num" }, bandText(bandOf(c))),
      el("td", { class: "num", title: "loss at the end of the cooldown probe (LR decayed to 0); it ranks the candidates when present" },
        c.probe_loss === null || c.probe_loss === undefined ? "–" : fmtNum(c.probe_loss, 4)),
      c.barred ? el("td", { class: "barred", title: c.barred }, "⊘ barred")
        : el("td", {}, c.winner ? "★ winner" : c.diverged ? "✕ diverged" : "")));
    const table = el("table", { class: "candidates" },
      el("thead", {}, el("tr", {}, ...["Candidate", "LR", "Steps", "First loss", "Last loss", planKind ? "Predicted final loss" : "Forecast", "± std", "90% band", "After cooldown", ""]
        .map((h) => el("th", h === "Predicted final loss" ? { title: `the loss at step ${int(sched.total_steps)} (end of the budget) that the loss model predicts if the job continued from this candidate under its own best plan` } : {}, h)))),
      el("tbody", {}, ...rows));
    for (const dot of table.querySelectorAll(".dot")) dot.style.background = dot.dataset.color;
    return el("div", { class: "stage-detail", "data-stage": st.index },
      el("h3", {}, `Stage ${st.index}`, el("span", { class: "muted small" },
        ` · ${st.warm ? "warm" : "cold"} start at step ${int(st.start_step)} · ${st.candidates.length} candidate${st.candidates.length === 1 ? "" : "s"} of ${st.cand_steps} steps · ${st.objective} loss`,
        planKind ? " · judged by predicted final loss" : "", winner ? ` · winner LR ${fmtNum(winner.lr)}` : "")),
      el("div", { class: "pair" },
        el("div", {}, el("div", { class: "chart-head" }, el("h4", {}, planKind ? "Observed candidate losses and predicted final losses" : "Observed short-horizon losses and forecasts"), candLegend), candHost),
        el("div", {}, el("div", { class: "chart-head" }, el("h4", {}, "GP posterior over log-LR"), postLegend), postHost)),
      el("div", { class: "table-wrap" }, table));
  }

  config(info) {
    const rows = Object.entries(info.config).filter(([, v]) => v !== null).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v))));
    const details = el("details", { class: "card config", open: this.configOpen },
      el("summary", {}, "Configuration"), el("table", {}, el("tbody", {}, ...rows)));
    details.addEventListener("toggle", () => { this.configOpen = details.open; });
    return details;
  }
}
