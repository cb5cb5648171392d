// Small SVG charts for the lrtune dashboard: linear or log axes; lines, bands, points and error bars.
// No dependencies. Every chart is an <svg data-chart="NAME" data-points="N" data-x0="..." data-x1="..."> whose
// layers are <g data-series="..." data-n="..."> groups, so tests and people can tell what was drawn.
// Zoom, the hover readout and legend toggles are in zoom.js.

const NS = "http://www.w3.org/2000/svg";
let clipCounter = 0;

/** Create an SVG element with attributes, optionally appended to a parent. */
export function svg(tag, attrs = {}, parent = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  if (parent) parent.appendChild(el);
  return el;
}

const SUPERSCRIPT = { "-": "\u207b", 0: "\u2070", 1: "\u00b9", 2: "\u00b2", 3: "\u00b3", 4: "\u2074",
  5: "\u2075", 6: "\u2076", 7: "\u2077", 8: "\u2078", 9: "\u2079" };

/** Format a number compactly: 0.0316, 2.3, 1.2e-5, 4.5e+4. */
export function fmtNum(v, digits = 3) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(digits - 1).replace("e+", "e");
  return String(parseFloat(v.toPrecision(digits)));
}

/** A tick label: like fmtNum, without trailing zeros in the mantissa (5e-4, not 5.00e-4). */
function fmtTick(v) {
  return fmtNum(v, 4).replace(/\.?0+e/, "e");
}

function fmtPow10(k) {
  if (k === 0) return "1";
  if (k === 1) return "10";
  return "10" + String(k).split("").map((c) => SUPERSCRIPT[c]).join("");
}

/** Round-number ticks covering [lo, hi] (about `count` of them). */
export function linearTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

/** Ticks of a log axis: every decade, plus 2 and 5 when the range spans few decades. */
export function logTicks(lo, hi) {
  const k0 = Math.floor(Math.log10(lo));
  const k1 = Math.ceil(Math.log10(hi));
  const decades = k1 - k0;
  const mults = decades <= 2 ? [1, 2, 5] : decades <= 4 ? [1, 3] : [1];
  const stride = decades > 8 ? 2 : 1;
  const ticks = [];
  for (let k = k0; k <= k1; k += 1) {
    for (const m of mults) {
      const v = m * 10 ** k;
      if (v >= lo * 0.999 && v <= hi * 1.001 && (m !== 1 || (k - k0) % stride === 0)) ticks.push({ v, k, m });
    }
  }
  return ticks;
}

/** A linear or log scale from a domain to pixel range. */
export class Scale {
  constructor(domain, range, log = false) {
    this.log = log;
    this.domain = domain;
    this.range = range;
    const [a, b] = log ? domain.map(Math.log10) : domain;
    this.a = a;
    this.span = b - a || 1;
  }

  map(v) {
    const t = ((this.log ? Math.log10(v) : v) - this.a) / this.span;
    return this.range[0] + t * (this.range[1] - this.range[0]);
  }

  /** The domain value at pixel `px`. */
  invert(px) {
    const u = this.a + ((px - this.range[0]) / (this.range[1] - this.range[0] || 1)) * this.span;
    return this.log ? 10 ** u : u;
  }

  ticks(count) {
    const [lo, hi] = this.domain;
    if (!this.log) return linearTicks(lo, hi, count).map((v) => ({ v, label: fmtTick(v) }));
    return logTicks(lo, hi).map(({ v, k, m }) => ({ v, label: m === 1 ? fmtPow10(k) : fmtTick(v), minor: m !== 1 }));
  }
}

function finite(v, log) {
  return v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);
}

/** The [min, max] of the values `pick` yields from every layer (finite, positive on a log axis), from the
 * points whose x lies in `xWindow` when one is given. */
function extent(layers, pick, log, xWindow = null) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const layer of layers) {
    if (layer.noExtent) continue;
    const pts = layer.points;
    const joined = layer.kind === "line" || layer.kind === "area";
    for (let i = 0; i < pts.length; i += 1) {
      const p = pts[i];
      if (!p) continue;
      if (xWindow && !inWindow(pts, i, joined, xWindow)) continue;
      for (const v of pick(p, layer)) {
        if (finite(v, log)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
    }
  }
  return lo <= hi ? [lo, hi] : null;
}

/** Point i lies in the x window, or (`joined`: a line or band) one of its neighbours is across the window. */
function inWindow(pts, i, joined, w) {
  const x = pts[i][0];
  if (x >= w[0] && x <= w[1]) return true;
  if (!joined) return false;
  return [pts[i - 1], pts[i + 1]].some((q) => q && Math.min(q[0], x) <= w[1] && Math.max(q[0], x) >= w[0]);
}

function pad(domain, log, frac) {
  let [lo, hi] = domain;
  if (log) {
    if (hi / lo < 1.5) return [lo / 1.25, hi * 1.25];
    const f = (hi / lo) ** frac;
    return [lo / f, hi * f];
  }
  if (hi === lo) return [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  const d = (hi - lo) * frac;
  return [lo - d, hi + d];
}

const X_OF = {
  line: (p) => [p[0]], points: (p) => [p[0]], area: (p) => [p[0]], errorbars: (p) => [p[0]], vlines: (p) => [p[0]],
};
const Y_OF = {
  line: (p) => [p[1]], points: (p) => [p[1]], area: (p) => [p[1], p[2]], errorbars: (p) => [p[1], p[2], p[3]],
  vlines: () => [],
};

/**
 * Draw a chart into `host` (its previous content is replaced) and return the <svg>.
 *
 * spec: {name, height, x: {label, log, domain, zoom}, y: {label, log, domain}, layers: [...], hidden, empty: "message"}
 *   x.zoom: [lo, hi] shown instead of the whole domain; the y axis then frames only the points inside it.
 *   hidden: a Set of layer names left undrawn (their group stays, with data-hidden and data-n="0").
 * layers: {kind: "line"|"area"|"points"|"errorbars"|"vlines", name, color, points, width, dash, opacity, r,
 *          title(p) -> tooltip text, cls, noExtent (the layer does not widen the axes),
 *          split (line: one <path> per stretch between nulls), label (its name in tooltips and the readout),
 *          labelAnchor: "end" (vlines: labels left of their line)}
 *   line: [[x, y] | null ...] (null breaks the line); area: [[x, lo, hi]]; points: [[x, y]];
 *   errorbars: [[x, y, lo, hi]]; vlines: [[x, label]].
 * The returned <svg> carries `geometry` ({xs, ys, m, plotW, plotH, layers}) unless nothing was drawn.
 */
export function drawChart(host, spec) {
  host.replaceChildren();
  const width = Math.max(host.clientWidth || 0, 320);
  const height = spec.height || 240;
  const m = { top: 14, right: 18, bottom: 44, left: 64, ...(spec.margin || {}) };
  const root = svg("svg", {
    class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": spec.title || spec.name, "data-chart": spec.name,
  }, host);
  const hidden = spec.hidden || new Set();
  const all = (spec.layers || []).filter((l) => l.points && l.points.length);
  const layers = all.filter((l) => !hidden.has(l.name));
  const xLog = !!spec.x.log;
  const yLog = !!spec.y.log;
  const zoom = spec.x.zoom || null;
  const xDom = zoom || spec.x.domain || extent(layers, (p, l) => X_OF[l.kind](p), xLog);
  let yDom = spec.y.domain || (zoom && extent(layers, (p, l) => Y_OF[l.kind](p), yLog, zoom)) ||
    extent(layers, (p, l) => Y_OF[l.kind](p), yLog);
  if (yDom && !spec.y.domain) yDom = pad(yDom, yLog, spec.y.pad ?? 0.06);
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  let drawn = 0;
  if (!xDom || !yDom) {
    svg("text", { x: m.left + plotW / 2, y: m.top + plotH / 2, class: "empty", "text-anchor": "middle" }, root)
      .textContent = spec.empty || "no data yet";
    root.setAttribute("data-points", "0");
    return root;
  }
  const xs = new Scale(xDom, [m.left, m.left + plotW], xLog);
  const ys = new Scale(yDom, [m.top + plotH, m.top], yLog);
  root.setAttribute("data-x0", String(+xDom[0].toPrecision(6)));
  root.setAttribute("data-x1", String(+xDom[1].toPrecision(6)));

  // grid and axes
  const axes = svg("g", { class: "axes" }, root);
  const yTicks = ys.ticks(Math.max(2, Math.round(plotH / 45)));
  for (const t of yTicks) {
    const y = ys.map(t.v);
    svg("line", { x1: m.left, x2: m.left + plotW, y1: y, y2: y, class: t.minor ? "grid minor" : "grid" }, axes);
    if (!t.minor || yTicks.length < 8) {
      svg("text", { x: m.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, axes).textContent = t.label;
    }
  }
  for (const t of xs.ticks(Math.max(2, Math.round(plotW / 90)))) {
    const x = xs.map(t.v);
    svg("line", { x1: x, x2: x, y1: m.top, y2: m.top + plotH, class: t.minor ? "grid minor" : "grid" }, axes);
    svg("line", { x1: x, x2: x, y1: m.top + plotH, y2: m.top + plotH + 4, class: "axis" }, axes);
    svg("text", { x, y: m.top + plotH + 17, class: "tick", "text-anchor": "middle" }, axes).textContent = t.label;
  }
  svg("rect", { x: m.left, y: m.top, width: plotW, height: plotH, class: "frame" }, axes);
  if (spec.x.label) {
    svg("text", { x: m.left + plotW / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, axes)
      .textContent = spec.x.label;
  }
  if (spec.y.label) {
    const cy = m.top + plotH / 2;
    svg("text", { x: 14, y: cy, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${cy})` },
      axes).textContent = spec.y.label;
  }

  const clipId = `clip-${spec.name}-${(clipCounter += 1)}`;
  svg("rect", { x: m.left, y: m.top - 2, width: plotW, height: plotH + 4 }, svg("clipPath", { id: clipId }, root));
  const plot = svg("g", { "clip-path": `url(#${clipId})` }, root);
  const X = (v) => xs.map(v);
  const Y = (v) => ys.map(v);
  const ok = (x, y) => finite(x, xLog) && finite(y, yLog);

  for (const layer of all) {
    const g = svg("g", { class: `layer ${layer.kind} ${layer.cls || ""}`.trim(), "data-series": layer.name }, plot);
    const color = layer.color || "#333";
    let n = 0;
    if (hidden.has(layer.name)) {
      g.setAttribute("data-hidden", "true");
    } else if (layer.kind === "line") {
      const runs = [""];
      let pen = false;
      for (const p of layer.points) {
        if (!p || !ok(p[0], p[1])) {
          if (pen && layer.split) runs.push("");
          pen = false;
          continue;
        }
        runs[runs.length - 1] += `${pen ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
        pen = true;
        n += 1;
      }
      for (const d of runs.filter((r, i) => r || i === 0)) {
        const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": layer.width || 1.6,
          "stroke-dasharray": layer.dash, opacity: layer.opacity, "stroke-linejoin": "round",
          "stroke-linecap": "round", class: "series" }, g);
        if (layer.label) svg("title", {}, path).textContent = layer.label;
      }
    } else if (layer.kind === "area") {
      const pts = layer.points.filter((p) => p && finite(p[0], xLog) && finite(p[1], yLog) && finite(p[2], yLog));
      if (pts.length) {
        const top = pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[2]).toFixed(1)}`);
        const bottom = pts.slice().reverse().map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`);
        svg("path", { d: `M${top.join("L")}L${bottom.join("L")}Z`, fill: color, opacity: layer.opacity ?? 0.18,
          stroke: "none", class: "band" }, g);
        n = pts.length;
      }
    } else if (layer.kind === "points") {
      for (const p of layer.points) {
        if (!p || !ok(p[0], p[1])) continue;
        const c = svg("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: layer.r || 2.6, fill: color,
          opacity: layer.opacity, class: "point" }, g);
        if (layer.title) svg("title", {}, c).textContent = layer.title(p);
        n += 1;
      }
    } else if (layer.kind === "errorbars") {
      for (const p of layer.points) {
        if (!p || !ok(p[0], p[1])) continue;
        const x = X(p[0]);
        const item = svg("g", { class: "errorbar" }, g);
        if (finite(p[2], yLog) && finite(p[3], yLog)) {
          const y0 = Y(p[2]);
          const y1 = Y(p[3]);
          svg("line", { x1: x, x2: x, y1: y0, y2: y1, stroke: color, "stroke-width": 1.4 }, item);
          svg("line", { x1: x - 4, x2: x + 4, y1: y0, y2: y0, stroke: color, "stroke-width": 1.4 }, item);
          svg("line", { x1: x - 4, x2: x + 4, y1: y1, y2: y1, stroke: color, "stroke-width": 1.4 }, item);
        }
        const pc = p[4] && p[4].color ? p[4].color : color;
        if (p[4] && p[4].winner) {
          svg("circle", { cx: x, cy: Y(p[1]), r: (layer.r || 4) + 4, fill: "none", stroke: "#111",
            "stroke-width": 1.6, class: "winner-ring" }, item);
        }
        svg("circle", { cx: x, cy: Y(p[1]), r: layer.r || 4, fill: pc, stroke: "#fff", "stroke-width": 1,
          class: `point forecast${p[4] && p[4].winner ? " winner" : ""}` }, item);
        if (layer.title) svg("title", {}, item).textContent = layer.title(p);
        n += 1;
      }
    } else if (layer.kind === "vlines") {
      for (const p of layer.points) {
        if (!p || !finite(p[0], xLog)) continue;
        const x = X(p[0]);
        svg("line", { x1: x, x2: x, y1: m.top, y2: m.top + plotH, stroke: color, "stroke-dasharray": "3 3",
          class: "marker" }, g);
        if (p[1]) {
          const before = layer.labelAnchor === "end"; // label left of the line (for a line at the right edge)
          svg("text", { x: before ? x - 3 : x + 3, y: m.top + 11, class: "marker-label", "text-anchor": before ? "end" : null },
            g).textContent = p[1];
        }
      }
    }
    g.setAttribute("data-n", String(n));
    drawn += n;
  }
  root.setAttribute("data-points", String(drawn));
  root.geometry = { xs, ys, m, plotW, plotH, layers };
  return root;
}

/**
 * An HTML legend: [{label, color, kind: "line"|"dash"|"dot"|"band"|"ring", series}].
 * With `toggle` ({hidden: Set of layer names, onToggle()}), an item that names its layers (`series`) is a button
 * that hides or shows them.
 */
export function legend(items, toggle = null) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const item of items) {
    const li = document.createElement("li");
    if (toggle && item.series && item.series.length) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "legend-key";
      btn.dataset.series = item.series.join(" ");
      const sync = () => {
        const off = item.series.every((s) => toggle.hidden.has(s));
        btn.setAttribute("aria-pressed", String(!off));
        btn.title = off ? `show ${item.label}` : `hide ${item.label}`;
        li.classList.toggle("off", off);
      };
      btn.addEventListener("click", () => {
        const off = item.series.every((s) => toggle.hidden.has(s));
        for (const s of item.series) {
          if (off) toggle.hidden.delete(s);
          else toggle.hidden.add(s);
        }
        sync();
        toggle.onToggle();
      });
      sync();
      li.appendChild(btn);
    }
    const sw = svg("svg", { width: 22, height: 12, class: "swatch", "aria-hidden": "true" });
    const c = item.color || "#333";
    if (item.kind === "dot") svg("circle", { cx: 11, cy: 6, r: 4, fill: c }, sw);
    else if (item.kind === "ring") {
      svg("circle", { cx: 11, cy: 6, r: 5, fill: "none", stroke: "#111", "stroke-width": 1.4 }, sw);
      svg("circle", { cx: 11, cy: 6, r: 2.5, fill: c }, sw);
    } else if (item.kind === "band") svg("rect", { x: 1, y: 1, width: 20, height: 10, fill: c, opacity: 0.25 }, sw);
    else {
      svg("line", { x1: 1, x2: 21, y1: 6, y2: 6, stroke: c, "stroke-width": 2.2,
        "stroke-dasharray": item.kind === "dash" ? "4 3" : null, opacity: item.opacity }, sw);
    }
    (li.firstChild || li).append(sw, document.createTextNode(item.label));
    ul.appendChild(li);
  }
  return ul;
}

/** Colour of position t in [0, 1] on a perceptually ordered ramp (dark blue → teal → yellow). */
export function ramp(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [220, 200, 30]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const c = stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
