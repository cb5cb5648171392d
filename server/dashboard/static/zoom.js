// Interactive step charts (a job's loss and LR): drag across a chart to zoom its x axis, double-click (or
// "Reset zoom") to see the whole budget again, hover for a readout of every series at that step, click a
// legend entry to hide or show its series. Charts on one SharedAxis zoom and read out together.
// Also the smoother of the loss chart: an exponential moving average over steps.

import { drawChart, fmtNum, legend, svg } from "./charts.js";

/** Drags shorter than this (pixels) are clicks, not zooms. */
const MIN_DRAG_PX = 5;
/** How close (pixels) the pointer must be to a lone point for the readout to report it. */
const NEAR_PX = 8;

/** The zoom window and hover step that the charts of one step axis share. */
export class SharedAxis {
  constructor() {
    this.zoom = null; // [lo, hi] steps, or null for the whole axis
    this.hover = null; // the step under the pointer, or null
    this.charts = [];
    this.frame = null;
  }

  setZoom(zoom) {
    this.zoom = zoom;
    for (const c of this.charts) c.draw();
  }

  /** Move the readout of every chart to step `x` (null hides it), once per animation frame. */
  setHover(x) {
    this.hover = x;
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      for (const c of this.charts) c.showHover();
    });
  }
}

/**
 * An exponential moving average of a line's y values over steps, debiased, restarted at every break (null).
 *
 * weight: the share of the average kept per step (0 = no smoothing, 0.9 ≈ the last 10 steps). Points may be
 * unevenly spaced (binned curves): a gap of d steps keeps weight^d. Extra point entries (labels) are kept.
 */
export function smooth(points, weight) {
  if (!(weight > 0 && weight < 1)) return points;
  const out = [];
  let avg = 0;
  let norm = 0;
  let prev = null;
  for (const p of points) {
    if (!p || p[1] === null || !Number.isFinite(p[1])) {
      out.push(null);
      avg = 0;
      norm = 0;
      prev = null;
      continue;
    }
    const keep = prev === null ? 0 : weight ** Math.max(p[0] - prev, 1);
    avg = keep * avg + (1 - keep) * p[1];
    norm = keep * norm + (1 - keep);
    prev = p[0];
    out.push([p[0], avg / norm, ...p.slice(2)]);
  }
  return out;
}

/** The value of `layer` at x: [label, text] or null where the series has nothing there. */
function valueAt(layer, x, xs) {
  const digits = layer.digits ?? 4;
  const pts = layer.points;
  if (layer.kind === "points") {
    let best = null;
    for (const p of pts) {
      if (p && Math.abs(xs.map(p[0]) - xs.map(x)) <= NEAR_PX && (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p;
    }
    return best ? [layer.label, fmtNum(best[1], digits)] : null;
  }
  if (layer.kind !== "line" && layer.kind !== "area") return null;
  for (let i = 0; i < pts.length; i += 1) {
    const a = pts[i];
    if (!a) continue;
    const b = pts[i + 1];
    const label = typeof a[a.length - 1] === "string" ? a[a.length - 1] : layer.label;
    if (!b) {
      // a stretch of one point: only when the pointer is on it
      if ((i === 0 || !pts[i - 1]) && Math.abs(xs.map(a[0]) - xs.map(x)) <= NEAR_PX) {
        return [label, layer.kind === "area" ? `${fmtNum(a[1], digits)} – ${fmtNum(a[2], digits)}` : fmtNum(a[1], digits)];
      }
      continue;
    }
    if (x < Math.min(a[0], b[0]) || x > Math.max(a[0], b[0])) continue;
    const t = b[0] === a[0] ? 0 : (x - a[0]) / (b[0] - a[0]);
    const at = (j) => (a[j] === null || b[j] === null ? null : a[j] + t * (b[j] - a[j]));
    return [label, layer.kind === "area" ? `${fmtNum(at(1), digits)} – ${fmtNum(at(2), digits)}` : fmtNum(at(1), digits)];
  }
  return null;
}

/**
 * A chart drawn by drawChart that zooms, reads out and toggles its series.
 *
 * spec: drawChart's spec; x.domain is the whole axis (zooming stays inside it). Layers with a `label` appear in
 * the readout (`readout: false` leaves one out); a line point's last entry, when a string, names its stretch.
 * axis: the SharedAxis it zooms with. hidden: the Set of layer names the user hid (kept across redraws).
 */
export class ZoomChart {
  constructor(host, spec, axis, hidden) {
    this.host = host;
    this.spec = spec;
    this.axis = axis;
    this.hidden = hidden;
    this.geo = null;
    axis.charts.push(this);
  }

  /** A legend whose entries (items with `series`: the layer names they stand for) hide and show series. */
  legend(items) {
    const ul = legend(items, { hidden: this.hidden, onToggle: () => this.draw() });
    ul.dataset.chart = this.spec.name;
    return ul;
  }

  draw() {
    const root = drawChart(this.host, { ...this.spec, x: { ...this.spec.x, zoom: this.axis.zoom }, hidden: this.hidden });
    this.root = root;
    this.geo = root.geometry || null;
    this.readout = null;
    if (!this.geo) return root;
    const { m, plotW, plotH } = this.geo;
    root.classList.add("zoomable");
    root.setAttribute("data-zoomed", this.axis.zoom ? "true" : "false");
    // Under the layers, a rect that takes the pointer where no layer is (point tooltips keep working).
    root.insertBefore(svg("rect", { x: m.left, y: m.top, width: plotW, height: plotH, class: "overlay" }),
      root.querySelector("g[clip-path]"));
    this.cross = svg("line", { y1: m.top, y2: m.top + plotH, class: "crosshair", visibility: "hidden" }, root);
    this.selection = svg("rect", { y: m.top, height: plotH, width: 0, class: "selection", visibility: "hidden" }, root);
    root.addEventListener("mousedown", (e) => this.startDrag(e));
    root.addEventListener("mousemove", (e) => {
      if (!this.dragging) this.axis.setHover(this.stepAt(e));
    });
    root.addEventListener("mouseleave", () => {
      if (!this.dragging) this.axis.setHover(null);
    });
    root.addEventListener("dblclick", (e) => {
      if (this.stepAt(e) === null) return;
      e.preventDefault();
      this.axis.setZoom(null);
    });
    if (this.axis.zoom) {
      const reset = document.createElement("button");
      reset.type = "button";
      reset.className = "reset-zoom small";
      reset.textContent = "Reset zoom";
      reset.title = "show the whole budget (or double-click the chart)";
      reset.addEventListener("click", () => this.axis.setZoom(null));
      reset.style.top = `${m.top + 4}px`;
      reset.style.right = `${(this.host.clientWidth || 0) - (m.left + plotW) + 4}px`;
      this.host.appendChild(reset);
    }
    this.showHover();
    return root;
  }

  /** The pointer's x in plot pixels, or null outside the plot. */
  pixelAt(e) {
    const { m, plotW, plotH } = this.geo;
    const box = this.root.getBoundingClientRect();
    const px = e.clientX - box.left;
    const py = e.clientY - box.top;
    return px >= m.left && px <= m.left + plotW && py >= m.top && py <= m.top + plotH ? px : null;
  }

  /** The step under the pointer, or null outside the plot. */
  stepAt(e) {
    const px = this.geo ? this.pixelAt(e) : null;
    return px === null ? null : this.geo.xs.invert(px);
  }

  startDrag(e) {
    const x0 = e.button === 0 && this.geo ? this.pixelAt(e) : null;
    if (x0 === null) return;
    e.preventDefault();
    const { m, plotW, xs } = this.geo;
    const box = this.root.getBoundingClientRect();
    const clamp = (px) => Math.min(Math.max(px, m.left), m.left + plotW);
    let x1 = x0;
    this.dragging = true;
    this.axis.setHover(null);
    const move = (ev) => {
      x1 = clamp(ev.clientX - box.left);
      this.selection.setAttribute("x", String(Math.min(x0, x1)));
      this.selection.setAttribute("width", String(Math.abs(x1 - x0)));
      this.selection.setAttribute("visibility", "visible");
    };
    const up = (ev) => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      this.dragging = false;
      move(ev);
      this.selection.setAttribute("visibility", "hidden");
      if (Math.abs(x1 - x0) < MIN_DRAG_PX) return;
      const [lo0, hi0] = this.spec.x.domain;
      const lo = Math.max(xs.invert(Math.min(x0, x1)), lo0);
      const hi = Math.min(xs.invert(Math.max(x0, x1)), hi0);
      if (hi > lo) this.axis.setZoom([lo, hi]);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  /** Show the crosshair and readout at the shared hover step (hide them when it is off this chart). */
  showHover() {
    if (!this.geo || !this.root.isConnected) return;
    const x = this.axis.hover;
    const { xs, m, plotW, layers } = this.geo;
    const px = x === null ? null : xs.map(x);
    if (px === null || px < m.left - 0.5 || px > m.left + plotW + 0.5) {
      this.cross.setAttribute("visibility", "hidden");
      if (this.readout) this.readout.hidden = true;
      return;
    }
    this.cross.setAttribute("x1", px.toFixed(1));
    this.cross.setAttribute("x2", px.toFixed(1));
    this.cross.setAttribute("visibility", "visible");
    if (!this.readout) {
      this.readout = document.createElement("div");
      this.readout.className = "readout";
      this.host.appendChild(this.readout);
    }
    const step = Math.round(x);
    const rows = [];
    for (const layer of layers) {
      if (!layer.label || layer.readout === false) continue;
      const v = valueAt(layer, x, xs);
      if (!v) continue;
      const row = document.createElement("div");
      row.className = "row";
      row.dataset.series = layer.name;
      const key = document.createElement("span");
      key.className = "key";
      key.style.background = layer.color || "#333";
      const value = document.createElement("strong");
      value.textContent = v[1];
      row.append(key, document.createTextNode(`${v[0]} `), value);
      rows.push(row);
    }
    const head = document.createElement("div");
    head.className = "step";
    head.textContent = `step ${step.toLocaleString("en-US")}`;
    this.readout.replaceChildren(head, ...rows);
    this.readout.dataset.step = String(step);
    this.readout.hidden = false;
    // Beside the pointer, on the side with room.
    const width = this.readout.offsetWidth;
    const left = px + 12 + width > m.left + plotW ? px - 12 - width : px + 12;
    this.readout.style.left = `${Math.max(left, 0)}px`;
    this.readout.style.top = `${m.top + 4}px`;
  }
}
