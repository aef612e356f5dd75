// The explorer's drawing: heatmaps, bars, the log-scale chart of gradient norms, the tooltip
// and the drawing pad. It draws numbers that Python computed; it computes none of the network's.
"use strict";

const Draw = (() => {
  // -- arrays: {shape, data: base64 of float32 little-endian, min, max, absmax} --
  function decode(arr) {
    const bytes = Uint8Array.from(atob(arr.data), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  }

  // -- colour scales --
  // sequential (viridis, 9 stops) for outputs; diverging (blue, white, red) centred at 0 for gradients
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  const DIVERGING = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
    [247, 247, 247], [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];
  const NAN_COLOUR = [255, 0, 255];

  function ramp(stops, t) {                       // t in [0, 1]
    const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
    const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    const a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }

  // colour(v) for a scale: "seq" (lo..hi), "div" (-absmax..absmax), "gray" (0..1, the image)
  function scale(kind, arr) {
    if (kind === "gray") return (v) => { const g = 255 * Math.min(Math.max(v, 0), 1); return [g, g, g]; };
    if (kind === "div") {
      const m = arr.absmax > 0 ? arr.absmax : 1;
      return (v) => ramp(DIVERGING, 0.5 + 0.5 * v / m);
    }
    const lo = arr.min, span = arr.max > arr.min ? arr.max - arr.min : 1;
    return (v) => ramp(VIRIDIS, (v - lo) / span);
  }

  // -- heatmaps: n tiles of h x w cells, `cols` tiles a row, each cell `px` pixels --
  // opts: {kind, cols, px, gap, offset(t) (where tile t starts in the values), label(t), what}
  function heatmaps(canvas, arr, h, w, n, opts) {
    const values = opts.values || decode(arr);
    const cols = Math.min(opts.cols || n, n), rows = Math.ceil(n / cols);
    const px = opts.px || Math.max(1, Math.round(48 / Math.max(h, w))), gap = opts.gap === undefined ? 2 : opts.gap;
    const tw = w * px + gap, th = h * px + gap;
    canvas.width = cols * tw - gap;
    canvas.height = rows * th - gap;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    const colour = scale(opts.kind, arr), offset = opts.offset || ((t) => t * h * w);
    img.data.fill(255);
    for (let t = 0; t < n; t++) {
      const x0 = (t % cols) * tw, y0 = Math.floor(t / cols) * th, base = offset(t);
      for (let i = 0; i < h; i++) {
        for (let j = 0; j < w; j++) {
          const v = values[base + i * w + j];
          const c = Number.isFinite(v) ? colour(v) : NAN_COLOUR;
          for (let di = 0; di < px; di++) {
            let p = ((y0 + i * px + di) * canvas.width + x0 + j * px) * 4;
            for (let dj = 0; dj < px; dj++, p += 4) {
              img.data[p] = c[0]; img.data[p + 1] = c[1]; img.data[p + 2] = c[2]; img.data[p + 3] = 255;
            }
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    canvas.hover = (x, y) => {                   // the cell under (x, y): its label and value
      const tc = Math.floor(x / tw), tr = Math.floor(y / th);
      const j = Math.floor((x - tc * tw) / px), i = Math.floor((y - tr * th) / px), t = tr * cols + tc;
      if (tc >= cols || t >= n || i >= h || j >= w) return null;
      const where = opts.label ? opts.label(t) : (n > 1 ? `channel ${t}` : "");
      return `${opts.what}${where ? " · " + where : ""} · (row ${i}, col ${j}) = ${fmt(values[offset(t) + i * w + j])}`;
    };
  }

  // -- bars: one bar a value, zero in the middle for "div", at the bottom for "seq" --
  function bars(canvas, arr, opts) {
    const values = decode(arr), n = values.length;
    const bw = Math.max(1, Math.min(16, Math.floor(300 / n))), height = opts.height || 64;
    canvas.width = n * bw;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, height);
    const colour = scale(opts.kind, arr);
    const lo = opts.kind === "div" ? -arr.absmax : Math.min(0, arr.min);
    const hi = opts.kind === "div" ? arr.absmax : Math.max(0, arr.max);
    const span = hi > lo ? hi - lo : 1, zero = height - 1 - (0 - lo) / span * (height - 2);
    ctx.fillStyle = "#999";
    ctx.fillRect(0, Math.round(zero), canvas.width, 1);
    for (let k = 0; k < n; k++) {
      const v = values[k];
      if (!Number.isFinite(v)) { ctx.fillStyle = "rgb(255,0,255)"; ctx.fillRect(k * bw, 0, bw - 1, height); continue; }
      const y = height - 1 - (v - lo) / span * (height - 2), c = colour(v);
      ctx.fillStyle = `rgb(${c[0] | 0},${c[1] | 0},${c[2] | 0})`;
      ctx.fillRect(k * bw, Math.min(y, zero), Math.max(bw - 1, 1), Math.max(Math.abs(zero - y), 1));
    }
    canvas.hover = (x) => {
      const k = Math.floor(x / bw);
      if (k < 0 || k >= n) return null;
      const name = opts.labels ? ` ${opts.labels[k]}` : "";
      return `${opts.what} · [${k}]${name} = ${fmt(values[k])}`;
    };
  }

  // -- the norms of dL/d(output), one bar a layer, on a log scale --
  function normChart(container, entries) {
    container.textContent = "";
    const logs = entries.filter((e) => e.norm > 0).map((e) => Math.log10(e.norm));
    const lo = logs.length ? Math.floor(Math.min(...logs)) : -1, hi = logs.length ? Math.ceil(Math.max(...logs)) : 0;
    const span = Math.max(hi - lo, 1);
    for (const e of entries) {
      const row = document.createElement("div");
      row.className = "norm-row";
      row.dataset.layer = e.name;
      row.dataset.norm = e.norm === null ? "NaN" : String(e.norm);
      const name = document.createElement("span");
      name.className = "norm-name";
      name.textContent = e.name;
      const track = document.createElement("span");
      track.className = "norm-track";
      const bar = document.createElement("span");
      bar.className = "norm-bar";
      const frac = e.norm === null ? 1 : e.norm > 0 ? (Math.log10(e.norm) - lo) / span : 0;
      bar.style.width = `${Math.max(frac * 100, 0.5).toFixed(1)}%`;
      if (e.norm === null) bar.classList.add("not-finite");
      track.append(bar);
      const value = document.createElement("span");
      value.className = "norm-value";
      value.textContent = e.norm === null ? "not finite" : e.norm.toExponential(2);
      row.append(name, track, value);
      container.append(row);
    }
    const axis = document.createElement("div");
    axis.className = "norm-axis";
    axis.textContent = `log scale: 1e${lo} at the left end, 1e${lo + span} at the right end`;
    container.append(axis);
  }

  function fmt(v) {
    if (!Number.isFinite(v)) return String(v);
    return v === 0 ? "0" : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toPrecision(7) : v.toExponential(6);
  }

  // -- the tooltip: any canvas with a hover(x, y) shows the cell under the pointer --
  function installTooltip(tip) {
    document.addEventListener("mousemove", (ev) => {
      const c = ev.target;
      const text = c instanceof HTMLCanvasElement && c.hover ? hoverText(c, ev) : null;
      if (!text) { tip.hidden = true; return; }
      tip.textContent = text;
      tip.hidden = false;
      tip.style.left = `${ev.pageX + 14}px`;
      tip.style.top = `${ev.pageY + 14}px`;
    });
  }

  function hoverText(canvas, ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * canvas.width / r.width, y = (ev.clientY - r.top) * canvas.height / r.height;
    return canvas.hover(x, y);
  }

  // -- the drawing pad: 28 x 28 values in [0, 1], a soft round pen, white on black like the data --
  function pad(canvas, onStroke) {
    const N = 28, pixels = new Float32Array(N * N);
    let last = null;
    const paint = (x, y) => {
      for (let i = Math.floor(y - 2); i <= Math.ceil(y + 2); i++) {
        for (let j = Math.floor(x - 2); j <= Math.ceil(x + 2); j++) {
          if (i < 0 || j < 0 || i >= N || j >= N) continue;
          const d = Math.hypot(i + 0.5 - y, j + 0.5 - x), v = Math.min(1, Math.max(0, (2.0 - d) / 1.0));
          pixels[i * N + j] = Math.max(pixels[i * N + j], v);
        }
      }
    };
    const at = (ev) => {
      const r = canvas.getBoundingClientRect();
      return [(ev.clientX - r.left) / r.width * N, (ev.clientY - r.top) / r.height * N];
    };
    const show = () => heatmaps(canvas, null, N, N, 1, { values: pixels, kind: "gray", px: 8, gap: 0, what: "drawing" });
    canvas.addEventListener("pointerdown", (ev) => {
      canvas.setPointerCapture(ev.pointerId);
      last = at(ev);
      paint(...last);
      show();
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!last) return;
      const p = at(ev), steps = Math.ceil(Math.hypot(p[0] - last[0], p[1] - last[1]) * 4) || 1;
      for (let s = 1; s <= steps; s++) paint(last[0] + (p[0] - last[0]) * s / steps, last[1] + (p[1] - last[1]) * s / steps);
      last = p;
      show();
    });
    const end = () => { if (last) { last = null; onStroke(Array.from(pixels)); } };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    show();
    return { clear: () => { pixels.fill(0); show(); return Array.from(pixels); }, pixels: () => Array.from(pixels) };
  }

  return { decode, heatmaps, bars, normChart, installTooltip, pad, fmt };
})();
