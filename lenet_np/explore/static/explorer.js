// The explorer page: asks the server (Python) for every number and draws it with draw.js.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { session: null, info: null, view: null, source: "test", mistakes: null, stepped: false,
    pad: null, queue: Promise.resolve(), pending: 0 };

  // -- talking to the server: JSON in, JSON out; a refusal carries one line in "error" --
  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new Error("the explorer's server does not answer: is python -m lenet_np.explore still running?");
    }
    let data;
    try { data = await res.json(); } catch (e) { data = { error: `the server answered ${res.status} without JSON` }; }
    if (!res.ok) throw new Error(data.error || `the server answered ${res.status}`);
    return data;
  }

  // one request at a time, in order; errors go to the status line
  function run(task) {
    state.pending += 1;
    document.body.dataset.busy = "1";
    state.queue = state.queue.then(task).then(() => { $("status").textContent = ""; }, (e) => {
      $("status").textContent = e.message;
    }).finally(() => {
      state.pending -= 1;
      if (state.pending === 0) delete document.body.dataset.busy;
    });
    return state.queue;
  }

  const num = (el) => (el.value.trim() === "" ? null : Number(el.value));
  const className = (k) => state.info.classes[k];
  const shape = (s) => `(${s.join(", ")})`;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- what to show --
  function inputSpec() {
    switch (state.source) {
      case "test": return { source: "test", index: num($("index")) };
      case "class": return { source: "class", class: num($("class")), rank: num($("rank")) };
      case "mistake": return { source: "mistake", rank: num($("mistake")) };
      default: return { source: "drawn", pixels: state.pad.pixels(), label: num($("label")) };
    }
  }

  async function show(withInput) {
    const body = { session: state.session, target: num($("target")) };
    if (withInput) body.input = inputSpec();
    const r = await api("/api/show", body);
    render(r.view, null);
  }

  async function step() {
    const r = await api("/api/step", { session: state.session, lr: num($("lr")) });
    render(r.view, r.change);
  }

  async function restore(path) {
    const r = await api(path, { session: state.session });
    if (r.view) render(r.view, null);
  }

  // -- drawing the view --
  function render(view, change) {
    state.view = view;
    state.stepped = change !== null || (state.stepped && view.steps > 0);
    renderInput(view);
    renderPrediction(view);
    renderSteps(view);
    renderChange(change);
    Draw.normChart($("norms"), [{ name: "image (dL/dimage)", norm: view.input_grad_norm }]
      .concat(view.layers.map((l) => ({ name: l.name, norm: l.grad_norm }))));
    renderLayers(view);
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }

  function renderInput(view) {
    const inp = view.input;
    Draw.heatmaps($("input-image"), inp.image, 28, 28, 1, { kind: "gray", px: 4, gap: 0, what: "input pixel" });
    const where = { test: `test image ${inp.index}`, class: `test image ${inp.index}, no. ${inp.rank} of its class`,
      mistake: `test image ${inp.index}, mistake no. ${inp.rank}`, drawn: "your drawing" }[inp.source];
    const label = inp.label === null ? "true label unknown" : `true label ${inp.label_name} (${inp.label})`;
    $("input-source").textContent = `${where} · ${label}`;
    $("input-source").dataset.source = inp.source;
    if (inp.index !== undefined) $("index").value = inp.index;
  }

  function renderPrediction(view) {
    const probs = $("probs");
    probs.textContent = "";
    probs.dataset.values = JSON.stringify(view.probs);
    view.probs.forEach((p, k) => {
      const row = el("div", "prob-row");
      if (k === view.input.target) row.classList.add("target");
      if (k === view.pred) row.classList.add("pred");
      if (k === view.input.label) row.classList.add("label");
      const bar = el("span", "prob-bar");
      bar.style.width = `${p === null ? 0 : (100 * p).toFixed(2)}%`;
      const track = el("span", "prob-track");
      track.append(bar);
      const marks = [k === view.input.label ? "true" : "", k === view.input.target ? "target" : ""].filter(Boolean);
      row.append(el("span", "prob-name", `${k} ${className(k)}`), track,
        el("span", "prob-value", p === null ? "—" : `${(100 * p).toFixed(2)}%`), el("span", "prob-mark", marks.join(", ")));
      probs.append(row);
    });
    $("loss").textContent = view.loss === null ? "not finite" : `${Draw.fmt(view.loss)} (target ${view.input.target_name})`;
    $("loss").dataset.value = view.loss === null ? "NaN" : String(view.loss);
    $("pred").textContent = view.pred === null ? "none (not finite)" : `${view.pred_name} (${view.pred})`;
    $("pred").dataset.value = view.pred === null ? "" : String(view.pred);
    $("warning").hidden = !view.warning;
    $("warning").textContent = view.warning || "";
  }

  function renderSteps(view) {
    $("steps").dataset.value = String(view.steps);
    $("steps").textContent = `${view.steps} step${view.steps === 1 ? "" : "s"} since the checkpoint ` +
      "(on this page's copy of the network: the checkpoint file is not changed)";
    $("undo").disabled = view.steps === 0;
    $("reset").disabled = view.steps === 0;
    $("again").disabled = !state.stepped;
  }

  function renderChange(change) {
    $("change").hidden = change === null;
    if (change === null) return;
    const v = (x) => (x === null ? "not finite" : Draw.fmt(x));
    const pct = (x) => (x === null ? "—" : `${(100 * x).toFixed(2)}%`);
    const pred = (k) => (k === null ? "none" : `${className(k)} (${k})`);
    const target = state.view.input.target_name;
    $("change-loss").textContent = `loss for ${target}: ${v(change.loss_before)} → ${v(change.loss_after)} (lr ${change.lr})`;
    $("change-loss").dataset.lossBefore = change.loss_before === null ? "NaN" : String(change.loss_before);
    $("change-loss").dataset.lossAfter = change.loss_after === null ? "NaN" : String(change.loss_after);
    $("change-pred").textContent = `prediction: ${pred(change.pred_before)} → ${pred(change.pred_after)}; ` +
      `probability of ${target}: ${pct(change.prob_before)} → ${pct(change.prob_after)}`;
    const box = $("change-layers");
    box.textContent = "";
    for (const l of change.layers) {
      const norms = Object.entries(l.params).map(([k, p]) => `‖Δ${k === "weight" ? "W" : "b"}‖ = ${v(p.delta_norm)}`);
      const div = el("div", "change-layer");
      div.append(el("div", "change-title", `${l.name} ${l.type}: ${norms.join(", ")}`));
      if (l.delta) {
        const [o, c, kh, kw] = l.delta.shape, canvas = el("canvas", "filters");
        Draw.heatmaps(canvas, l.delta, kh, kw, o * c, filterGrid(o, c, kh, kw, `${l.name} ΔW`));
        div.append(canvas, el("div", "hint", "ΔW per filter (columns), ‖ΔW‖ of each: " +
          l.delta_per_filter.map((x, k) => `${k}: ${x === null ? "not finite" : x.toExponential(2)}`).join(", ")));
      }
      box.append(div);
    }
  }

  // a conv weight (O, C, KH, KW) as tiles: filter o in column o, input channel c in row c
  function filterGrid(o, c, kh, kw, what) {
    return { kind: "div", cols: o, px: kh * o > 40 ? 4 : 6, gap: 2, what, offset: (t) => ((t % o) * c + Math.floor(t / o)) * kh * kw,
      label: (t) => `filter ${t % o}, input channel ${Math.floor(t / o)}` };
  }

  function picture(arr, kind, what, labels) {
    const canvas = el("canvas", "map");
    const s = arr.shape;
    if (s.length === 3) Draw.heatmaps(canvas, arr, s[1], s[2], s[0], { kind, cols: Math.ceil(Math.sqrt(s[0])), what });
    else if (s.length === 2) Draw.heatmaps(canvas, arr, s[0], s[1], 1, { kind, px: 4, gap: 0, what });
    else Draw.bars(canvas, arr, { kind, what, labels });
    return canvas;
  }

  function cell(canvas, caption) {
    const td = el("td");
    td.append(canvas, el("div", "caption", caption));
    return td;
  }

  const range = (a) => `from ${Draw.fmt(a.min)} to ${Draw.fmt(a.max)}`;
  const normText = (x) => (x === null ? "not finite" : x.toExponential(4));

  function renderLayers(view) {
    const body = document.querySelector("#layers tbody");
    body.textContent = "";
    const first = el("tr", "input-row");
    first.dataset.layer = "input";
    first.dataset.gradNorm = String(view.input_grad_norm);
    first.append(headCell("image", "the input", shape([1, 1, 28, 28]), null),
      cell(picture(view.input.image, "gray", "image"), "the image, 0 black to 1 white"),
      cell(picture(view.input_grad, "div", "dL/dimage"), `dL/dimage (saliency) · ‖·‖ = ${normText(view.input_grad_norm)}`));
    body.append(first);
    for (const l of view.layers) {
      const tr = el("tr");
      tr.dataset.layer = l.name;
      tr.dataset.gradNorm = l.grad_norm === null ? "NaN" : String(l.grad_norm);
      const labels = l.output.shape.length === 1 && l.output.shape[0] === 10 ? state.info.classes : null;
      tr.append(headCell(l.name, l.repr, shape(l.shape), l.doc, l.params),
        cell(picture(l.output, "seq", `${l.name} output`, labels), range(l.output)),
        cell(picture(l.grad, "div", `${l.name} dL/d(output)`, labels), `‖dL/d(output)‖ = ${normText(l.grad_norm)}`));
      body.append(tr);
      if (l.filters) {
        const [o, c, kh, kw] = l.filters.weight.shape;
        const ftr = el("tr", "filters-row");
        ftr.dataset.layer = `${l.name}.filters`;
        const w = el("canvas", "filters"), g = el("canvas", "filters");
        Draw.heatmaps(w, l.filters.weight, kh, kw, o * c, filterGrid(o, c, kh, kw, `${l.name} W`));
        Draw.heatmaps(g, l.filters.grad, kh, kw, o * c, filterGrid(o, c, kh, kw, `${l.name} dL/dW`));
        ftr.append(headCell(`${l.name} filters`, `weight ${shape(l.filters.weight.shape)}: filter o in column o, ` +
          "input channel c in row c", "", null),
          cell(w, `W, white at 0 · ‖W‖ = ${normText(l.params.weight.norm)}`),
          cell(g, `dL/dW · ‖·‖ = ${normText(l.params.weight.grad_norm)}`));
        body.append(ftr);
      }
    }
  }

  function headCell(name, repr, shapeText, doc, params) {
    const td = el("td", "layer-head");
    td.append(el("div", "lname", name), el("div", "repr", repr));
    if (shapeText) td.append(el("div", "shape", `output ${shapeText}`));
    if (params && Object.keys(params).length) {
      td.append(el("div", "params", Object.entries(params).map(([k, p]) =>
        `‖dL/d${k}‖ = ${normText(p.grad_norm)}`).join(", ")));
    }
    if (doc) td.append(el("div", "doc", `read: ${doc}`));
    return td;
  }

  // -- the controls --
  function setSource(source) {
    state.source = source;
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.dataset.tab !== source; });
    document.querySelector(`input[name=source][value=${source}]`).checked = true;
  }

  async function loadMistakes() {
    if (state.mistakes) return;
    state.mistakes = await api("/api/mistakes");
    const m = state.mistakes;
    $("mistake").max = Math.max(m.mistakes.length - 1, 0);
    $("mistake-info").textContent = `${m.total} mistakes on the test set; the ${m.mistakes.length} most confident, ` +
      "most confident first";
  }

  function nudge(id, delta) {
    const input = $(id);
    input.value = Math.max(0, (num(input) || 0) + delta);
    run(() => show(true));
  }

  function wire() {
    document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", () => {
      setSource(r.value);
      run(async () => { if (r.value === "mistake") await loadMistakes(); await show(true); });
    }));
    for (const id of ["index", "rank", "mistake", "class", "label"]) $(id).addEventListener("change", () => run(() => show(true)));
    $("target").addEventListener("change", () => run(() => show(false)));
    for (const [id, delta] of [["prev", -1], ["next", 1]]) {
      $(`index-${id}`).addEventListener("click", () => nudge("index", delta));
      $(`rank-${id}`).addEventListener("click", () => nudge("rank", delta));
      $(`mistake-${id}`).addEventListener("click", () => nudge("mistake", delta));
    }
    $("clear").addEventListener("click", () => { state.pad.clear(); run(() => show(true)); });
    $("step").addEventListener("click", () => run(step));
    $("again").addEventListener("click", () => run(step));
    $("undo").addEventListener("click", () => run(() => restore("/api/undo")));
    $("reset").addEventListener("click", () => run(() => restore("/api/reset")));
  }

  function renderInfo(info) {
    $("network").textContent = `${info.network} · weights: ${info.weights} · evaluation mode, one image at a time`;
    $("print").textContent = info.print;
    const notes = $("notes");
    for (const n of info.notes) notes.append(el("li", "note", n));
    $("loss-doc").textContent = `(read: ${info.loss_doc})`;
    info.classes.forEach((name, k) => {
      const count = info.data.available ? ` (${info.data.per_class[k]})` : "";
      $("class").append(new Option(`${k} ${name}${count}`, String(k)));
      $("label").append(new Option(`${k} ${name}`, String(k)));
      $("target").append(new Option(`${k} ${name}`, String(k)));
    });
    $("lr").max = String(info.max_lr);
    if (info.data.available) {
      $("index").max = String(info.data.count - 1);
    } else {
      document.querySelectorAll("input[name=source]").forEach((r) => { r.disabled = r.value !== "drawn"; });
    }
  }

  async function start() {
    Draw.installTooltip($("tooltip"));
    state.pad = Draw.pad($("pad"), () => run(() => show(true)));
    wire();
    state.info = await api("/api/info");
    renderInfo(state.info);
    state.session = (await api("/api/session", {})).session;
    setSource(state.info.data.available ? "test" : "drawn");
    await show(true);
  }

  document.addEventListener("DOMContentLoaded", () => run(start));
})();
