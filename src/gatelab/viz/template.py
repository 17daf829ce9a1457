"""The report page: one HTML file with inline CSS, JS and data (no network request).

`__DATA__` is replaced by a JSON object (see report.py); every "<" in it is escaped, so no
text (not even "</script>") can end the script element early.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatelab report</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
  h1 { font-size: 1.35em; margin: .8em 0 .1em; }
  h2 { font-size: 1.1em; margin: 1.3em 0 .4em; }
  .sub { color: #555; margin: 0 0 .8em; }
  .controls { position: sticky; top: 0; background: #fafafa; padding: .5em 0; border-bottom: 1px solid #ddd;
              z-index: 2; display: flex; gap: 1.2em; align-items: center; flex-wrap: wrap; }
  .controls label { font-weight: 600; }
  select, input { font: inherit; }
  #unit-num { width: 5em; }
  #unit-range { width: 16em; }
  #legend { display: inline-flex; align-items: center; gap: .4em; color: #444; }
  #legend canvas { border: 1px solid #ccc; }
  #text { font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre;
          background: #fff; border: 1px solid #ddd; padding: .6em; overflow-x: auto; tab-size: 8; }
  #text span.ch { cursor: crosshair; }
  #text span.nl::before { content: "\21B5"; color: #bbb; }
  #heat-wrap { overflow: auto; max-height: 560px; border: 1px solid #ddd; background: #fff; }
  #heat { image-rendering: pixelated; cursor: crosshair; display: block; }
  #tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: .3em .55em;
         border-radius: 4px; font: 12px/1.35 ui-monospace, monospace; display: none; z-index: 5;
         white-space: pre; }
  table { border-collapse: collapse; background: #fff; }
  th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
  td.r { text-align: right; font-variant-numeric: tabular-nums; }
  button.pick { font: inherit; cursor: pointer; background: #eef3fb; border: 1px solid #9bb3d6; border-radius: 3px; }
  .features { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
  img.curve { max-width: 100%; border: 1px solid #ddd; background: #fff; }
  .note { color: #666; font-size: .92em; }
</style>
</head>
<body>
<h1 id="title"></h1>
<p class="sub" id="subtitle"></p>
<div class="controls">
  <span><label for="q">value</label> <select id="q"></select></span>
  <span><label for="layer">layer</label> <select id="layer"></select></span>
  <span><label for="unit-num">unit</label> <input id="unit-num" type="number" min="0" value="0">
        <input id="unit-range" type="range" min="0" value="0"></span>
  <span id="legend"><canvas id="legend-bar" width="160" height="12"></canvas><span id="legend-text"></span></span>
</div>
<h2>The text, coloured by the chosen unit</h2>
<p class="note">Each character's background is the chosen unit's value after the model read that
character. Hover for the exact value and the model's probability of the character.</p>
<div id="text"></div>
<h2>Every unit of the layer (rows) at every character (columns)</h2>
<p class="note">Hover for values; click a row to choose that unit.</p>
<div id="heat-wrap"><canvas id="heat"></canvas></div>
<h2>Units that track something interpretable</h2>
<p class="note" id="features-note"></p>
<div class="features" id="features"></div>
<h2>Training curve</h2>
<img class="curve" id="curve" alt="training curve">
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
function f32(b64) {
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
  return new Float32Array(bytes.buffer);
}
const VALS = f32(D.values), PROBS = f32(D.probs);
const T = D.T, L = D.L, H = D.H, Q = D.quantities;
const chars = Array.from(D.text);
const state = { q: D.initial.q, layer: D.initial.layer, unit: D.initial.unit };
function val(q, layer, t, u) { return VALS[((Q.indexOf(q) * L + layer) * T + t) * H + u]; }
const GATES = new Set(["f", "i", "o", "r", "z"]);
function scale(q, layer, unit) {  // [lo, hi] of the colour scale
  if (GATES.has(q)) return [0, 1];
  let m = 1e-6;
  if (q === "c") { for (let t = 0; t < T; t++) m = Math.max(m, Math.abs(val(q, layer, t, unit))); }
  else m = 1;
  return [-m, m];
}
function rgb(q, v, lo, hi) {  // gates: white -> blue; signed: red <- white -> blue
  let r, g, b;
  if (GATES.has(q)) {
    const a = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
    r = 255 - a * (255 - 33); g = 255 - a * (255 - 102); b = 255 - a * (255 - 172);
  } else {
    const a = Math.min(1, Math.max(-1, v / hi));
    if (a >= 0) { r = 255 - a * (255 - 33); g = 255 - a * (255 - 102); b = 255 - a * (255 - 172); }
    else { r = 255 + a * (255 - 178); g = 255 + a * (255 - 24); b = 255 + a * (255 - 43); }
  }
  return [Math.round(r), Math.round(g), Math.round(b)];
}
function colour(q, v, lo, hi) { const c = rgb(q, v, lo, hi); return "rgb(" + c[0] + ", " + c[1] + ", " + c[2] + ")"; }
const tip = document.getElementById("tip");
function show(ev, text) { tip.textContent = text; tip.style.display = "block";
  tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px"; }
function hide() { tip.style.display = "none"; }
function shown(ch) { return ch === "\n" ? "\\n" : ch === "\t" ? "\\t" : ch; }
function fmt(v) { return Number.isFinite(v) ? v.toPrecision(7) : String(v); }

// --- header, controls --------------------------------------------------------------
document.getElementById("title").textContent = D.title;
document.getElementById("subtitle").textContent = D.subtitle;
const qSel = document.getElementById("q"), lSel = document.getElementById("layer");
for (const q of Q) { const o = document.createElement("option"); o.value = q;
  o.textContent = q + " — " + D.meaning[q]; qSel.appendChild(o); }
for (let l = 0; l < L; l++) { const o = document.createElement("option"); o.value = String(l);
  o.textContent = String(l); lSel.appendChild(o); }
const uNum = document.getElementById("unit-num"), uRange = document.getElementById("unit-range");
uNum.max = uRange.max = String(H - 1);

// --- the text ------------------------------------------------------------------------
const textDiv = document.getElementById("text");
const spans = chars.map((ch, t) => {
  const s = document.createElement("span");
  s.className = ch === "\n" ? "ch nl" : "ch";
  s.textContent = ch;
  s.dataset.t = String(t);
  textDiv.appendChild(s);
  return s;
});
textDiv.addEventListener("mousemove", ev => {
  const t = ev.target.dataset ? ev.target.dataset.t : undefined;
  if (t === undefined) return hide();
  const k = Number(t), v = val(state.q, state.layer, k, state.unit);
  show(ev, "'" + shown(chars[k]) + "' at " + k + "\n" + state.q + "[layer " + state.layer + ", unit " +
       state.unit + "] = " + fmt(v) + "\np(char | before) = " + (k ? fmt(PROBS[k]) : "—"));
});
textDiv.addEventListener("mouseleave", hide);

// --- the heat map --------------------------------------------------------------------
const heat = document.getElementById("heat"), ctx = heat.getContext("2d");
const CW = Math.max(1, Math.min(4, Math.floor(2400 / T))), RH = Math.max(1, Math.min(6, Math.floor(560 / H)));
heat.width = T; heat.height = H;
heat.style.width = (T * CW) + "px"; heat.style.height = (H * RH) + "px";
function drawHeat() {
  const img = ctx.createImageData(T, H), [lo, hi] = scale(state.q, state.layer, 0);
  let m = 1e-6;
  if (state.q === "c") for (let t = 0; t < T; t++) for (let u = 0; u < H; u++)
    m = Math.max(m, Math.abs(val("c", state.layer, t, u)));
  for (let u = 0; u < H; u++) for (let t = 0; t < T; t++) {
    const v = val(state.q, state.layer, t, u);
    const c = rgb(state.q, v, state.q === "c" ? -m : lo, state.q === "c" ? m : hi);
    const k = (u * T + t) * 4;
    img.data[k] = c[0]; img.data[k + 1] = c[1]; img.data[k + 2] = c[2]; img.data[k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
function heatCell(ev) { const r = heat.getBoundingClientRect();
  return [Math.floor((ev.clientX - r.left) / CW), Math.floor((ev.clientY - r.top) / RH)]; }
heat.addEventListener("mousemove", ev => {
  const [t, u] = heatCell(ev);
  if (t < 0 || t >= T || u < 0 || u >= H) return hide();
  show(ev, "unit " + u + ", '" + shown(chars[t]) + "' at " + t + "\n" + state.q + " = " +
       fmt(val(state.q, state.layer, t, u)));
});
heat.addEventListener("mouseleave", hide);
heat.addEventListener("click", ev => { const [, u] = heatCell(ev); if (u >= 0 && u < H) select({ unit: u }); });

// --- units that track features -------------------------------------------------------
document.getElementById("features-note").textContent = D.features_note;
const fDiv = document.getElementById("features");
const byFeature = {};
for (const row of D.top) (byFeature[row.feature] = byFeature[row.feature] || []).push(row);
for (const [name, rows] of Object.entries(byFeature)) {
  const table = document.createElement("table");
  table.innerHTML = "<caption><b></b></caption><tr><th>#</th><th>unit</th><th>r</th></tr>";
  table.querySelector("b").textContent = name.replace("_", " ");
  for (const row of rows) {
    const tr = document.createElement("tr"), btn = document.createElement("button");
    btn.className = "pick"; btn.textContent = row.q + " · layer " + row.layer + " · unit " + row.unit;
    btn.dataset.feature = name; btn.dataset.rank = String(row.rank);
    btn.addEventListener("click", () => select({ q: row.q, layer: row.layer, unit: row.unit }));
    const td0 = document.createElement("td"), td1 = document.createElement("td"), td2 = document.createElement("td");
    td0.textContent = String(row.rank); td1.appendChild(btn); td2.className = "r"; td2.textContent = row.r.toFixed(3);
    tr.append(td0, td1, td2); table.appendChild(tr);
  }
  fDiv.appendChild(table);
}
if (D.curve) document.getElementById("curve").src = D.curve;
else document.getElementById("curve").replaceWith(Object.assign(document.createElement("p"),
  { textContent: "(no metrics recorded)", className: "note" }));

// --- applying a selection ------------------------------------------------------------
function paint() {
  const [lo, hi] = scale(state.q, state.layer, state.unit);
  for (let t = 0; t < T; t++) {
    spans[t].style.backgroundColor = colour(state.q, val(state.q, state.layer, t, state.unit), lo, hi);
  }
  const bar = document.getElementById("legend-bar").getContext("2d");
  for (let x = 0; x < 160; x++) {
    bar.fillStyle = colour(state.q, lo + (hi - lo) * x / 159, lo, hi);
    bar.fillRect(x, 0, 1, 12);
  }
  document.getElementById("legend-text").textContent = fmt(lo) + " … " + fmt(hi);
  drawHeat();
}
function select(change) {
  Object.assign(state, change);
  state.unit = Math.max(0, Math.min(H - 1, Number(state.unit) | 0));
  qSel.value = state.q; lSel.value = String(state.layer);
  uNum.value = uRange.value = String(state.unit);
  paint();
}
qSel.addEventListener("change", () => select({ q: qSel.value }));
lSel.addEventListener("change", () => select({ layer: Number(lSel.value) }));
uNum.addEventListener("input", () => select({ unit: uNum.value }));
uRange.addEventListener("input", () => select({ unit: uRange.value }));
select({});
document.body.dataset.ready = "1";
</script>
</body>
</html>
"""
