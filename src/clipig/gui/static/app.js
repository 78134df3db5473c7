// CLIPig live editor: the YAML editor, live image, statistics and plots. No libraries, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const editor = $("editor"), highlight = $("highlight"), gutter = $("gutter-inner");
const COLORS = ["#5fb3f9", "#f0a86b", "#6cc070", "#ef6b6b", "#c58af0", "#e6d27a", "#4fc6b8", "#f27fb2"];

const app = {
  state: null,                                // the last state message of the server
  points: [], generation: -1,                 // plot points {e, l, s: {label: similarity}}
  error: null,                                // the editor's current problem {message, path, line}
  savedText: null,                            // text as last loaded/saved (for the dirty mark)
  loaded: false,                              // the editor got its text from the server
  zoom: "fit", frames: 0, imageUrl: null,
  snapshotsKey: "",
};

// --- HTTP ---------------------------------------------------------------------------------------------------

async function post(path, data = {}) {
  let response;
  try {
    response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify(data)});
  } catch (e) {
    return {ok: false, error: {message: "the server cannot be reached", line: null}};
  }
  if (!response.ok) {
    return {ok: false, error: {message: `${response.status}: ${(await response.text()).trim()}`, line: null}};
  }
  return response.json();
}

function toast(text, bad = false) {
  const t = $("toast");
  t.textContent = text;
  t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ""; }, bad ? 6000 : 3000);
}

function failed(result) {
  const e = result.error || {};
  if (e.line) showProblem(e);
  toast((e.line ? `line ${e.line}: ` : "") + (e.path ? `${e.path}: ` : "") + (e.message || "failed"), true);
}

// --- the YAML highlighter -----------------------------------------------------------------------------------

const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const span = (cls, s) => s ? `<span class="${cls}">${esc(s)}</span>` : "";
const WORDS = new Set(["true", "false", "yes", "no", "on", "off", "null", "none", "~"]);
const TOKEN = /("(?:[^"\\]|\\.)*"?|'(?:[^']|'')*'?)|([A-Za-z_][\w./@-]*)|((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?)|(\s+)|([^\sA-Za-z_\d"']+)/g;

function highlightValue(text) {
  let out = "";
  for (const m of text.matchAll(TOKEN)) {
    const [all, str, word, num, space] = m;
    if (str) out += span("y-str", str);
    else if (word) {
      const call = /^\s*\(/.test(text.slice(m.index + word.length));
      out += span(WORDS.has(word.toLowerCase()) ? "y-bool" : call ? "y-func" : "y-word", word);
    } else if (num) out += span("y-num", num);
    else if (space) out += space;
    else out += span("y-op", all);
  }
  return out;
}

function splitComment(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) { if (c === quote) quote = null; continue; }
    if ((c === '"' || c === "'") && (i === 0 || /[\s:\-\[{,]/.test(line[i - 1]))) { quote = c; continue; }
    if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) return [line.slice(0, i), line.slice(i)];
  }
  return [line, ""];
}

const LINE = /^(\s*)((?:-(?:\s+|$))*)(?:("[^"]*"|'[^']*'|[^\s#'"\-\[{][^:#]*?|-[^\s:#][^:#]*?)(\s*:)(?=\s|$))?(.*)$/;

function highlightLine(line) {
  const [code, comment] = splitComment(line);
  const [, indent, dashes, key, colon, rest] = LINE.exec(code);
  return indent + span("y-dash", dashes) + (key !== undefined ? span("y-key", key) + span("y-punct", colon) : "")
    + highlightValue(rest) + span("y-comment", comment);
}

// --- the editor ---------------------------------------------------------------------------------------------

function render() {
  const lines = editor.value.split("\n");
  const bad = app.error && app.error.line;
  highlight.innerHTML = lines.map((line, i) => {
    const err = bad === i + 1;
    const msg = err ? `<span class="errmsg">${esc(app.error.message)}</span>` : "";
    return `<div class="l${err ? " err" : ""}">${highlightLine(line)}${msg}</div>`;
  }).join("");
  if (gutter.childElementCount !== lines.length || gutter.dataset.bad !== String(bad)) {
    gutter.innerHTML = lines.map((_, i) => `<div${bad === i + 1 ? ' class="err"' : ""}>${i + 1}</div>`).join("");
    gutter.dataset.bad = String(bad);
  }
  syncScroll();
  markDirty();
}

function syncScroll() {
  highlight.scrollTop = editor.scrollTop;
  highlight.scrollLeft = editor.scrollLeft;
  gutter.style.transform = `translateY(${-editor.scrollTop}px)`;
}

function setText(text) {
  editor.value = text;
  render();
  validateSoon(0);
}

function insert(text) {
  // execCommand keeps the browser's undo history; setRangeText is the fallback
  if (!document.execCommand("insertText", false, text)) {
    editor.setRangeText(text, editor.selectionStart, editor.selectionEnd, "end");
    render();
  }
}

editor.addEventListener("input", () => { render(); validateSoon(); });
editor.addEventListener("scroll", syncScroll);
editor.addEventListener("keydown", (e) => {
  if (e.key === "Tab" && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    insert("  ");
  } else if (e.key === "Enter" && !e.altKey && !e.ctrlKey && !e.metaKey && !e.shiftKey) {
    const before = editor.value.slice(0, editor.selectionStart);
    const line = before.slice(before.lastIndexOf("\n") + 1);
    let indent = /^\s*/.exec(line)[0];
    if (/^\s*-\s/.test(line)) indent += "  ";           // inside a list entry
    if (/:\s*$/.test(splitComment(line)[0])) indent += "  ";  // a new mapping
    e.preventDefault();
    insert("\n" + indent);
  }
});

function showProblem(error) {
  app.error = error;
  const p = $("problems");
  if (error) {
    p.className = "bad";
    p.textContent = (error.line ? `line ${error.line}: ` : "") + (error.path ? `${error.path}: ` : "") + error.message;
    p.title = p.textContent + (error.line ? "\n(click to go to the line)" : "");
  } else {
    p.className = "ok";
    p.textContent = "\u2713 valid";
    p.title = "";
  }
  render();
}

$("problems").addEventListener("click", () => {
  if (!app.error || !app.error.line) return;
  const lines = editor.value.split("\n");
  const start = lines.slice(0, app.error.line - 1).reduce((n, l) => n + l.length + 1, 0);
  editor.focus();
  editor.setSelectionRange(start, start + (lines[app.error.line - 1] || "").length);
  const lh = parseFloat(getComputedStyle(editor).lineHeight);
  editor.scrollTop = Math.max(0, (app.error.line - 3) * lh);
});

let validateTimer = null, validateSeq = 0;
function validateSoon(delay = 250) {
  clearTimeout(validateTimer);
  validateTimer = setTimeout(validate, delay);
}

async function validate() {
  const seq = ++validateSeq;
  const result = await post("/api/validate", {text: editor.value});
  if (seq !== validateSeq) return;  // a newer check is under way
  if (result.ok) showProblem(result.valid ? null : result.error);
}

function markDirty() {
  const dirty = app.savedText !== null && editor.value !== app.savedText;
  document.title = (dirty ? "\u2022 " : "") + "CLIPig live editor";
}

// --- commands -----------------------------------------------------------------------------------------------

async function start() {
  clearTimeout(validateTimer);
  const result = await post("/api/start", {text: editor.value});
  if (!result.ok) failed(result);
}

async function stop() {
  const result = await post("/api/stop");
  if (!result.ok) failed(result);
}

async function reset() {
  const result = await post("/api/reset", {text: editor.value});
  if (!result.ok) failed(result);
  else toast("started again from noise");
}

async function saveImage() {
  const result = await post("/api/save-image");
  if (!result.ok) return failed(result);
  toast(`saved ${result.path}` + (result.sidecar ? `\nand ${result.sidecar}` : ""));
}

async function saveConfig(overwrite = false) {
  const path = $("path").value.trim();
  const result = await post("/api/config/save", {text: editor.value, path, overwrite});
  if (!result.ok) return failed(result);
  if (result.exists) {
    if (confirm(`${result.path} exists. Overwrite it?`)) saveConfig(true);
    return;
  }
  app.savedText = editor.value;
  $("path").value = result.path;
  markDirty();
  toast(`saved ${result.path}`);
}

function discardEdits() {
  return app.savedText === null || editor.value === app.savedText || confirm("Discard the unsaved edits?");
}

function loaded(result, name) {
  // a PNG's recorded config has no file of its own yet: it is saved where the user says
  app.savedText = result.image ? null : result.text;
  $("path").value = result.path || "";
  setText(result.text);
  markDirty();
  toast(`loaded ${result.image ? "the config of " : ""}${name}`);
}

async function loadConfig() {
  if (!discardEdits()) return;
  const result = await post("/api/config/load", {path: $("path").value.trim()});
  if (!result.ok) return failed(result);
  loaded(result, result.image || result.path);
}

// dropping a .yaml (its text) or a PNG made by CLIPig (its recorded config) on the page loads it
async function dropped(file) {
  if (!discardEdits()) return;
  if (/\.ya?ml$/i.test(file.name)) return loaded({text: await file.text(), path: "", image: file.name}, file.name);
  let response;
  try {
    response = await fetch(`/api/config/from-png?name=${encodeURIComponent(file.name)}`,
                           {method: "POST", headers: {"Content-Type": "image/png"}, body: file});
  } catch (e) {
    return failed({error: {message: "the server cannot be reached"}});
  }
  const result = response.ok ? await response.json()
    : {ok: false, error: {message: `${response.status}: ${(await response.text()).trim()}`}};
  if (!result.ok) return failed(result);
  loaded({text: result.text, path: "", image: file.name}, file.name);
}

document.addEventListener("dragover", (e) => {
  if (!e.dataTransfer.types.includes("Files")) return;
  e.preventDefault();
  document.body.classList.add("dropping");
});
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dropping"); });
document.addEventListener("drop", (e) => {
  document.body.classList.remove("dropping");
  const file = e.dataTransfer.files[0];
  if (!file) return;
  e.preventDefault();
  dropped(file);
});

async function restore(id) {
  const result = await post(`/api/snapshot/${id}/restore`);
  if (!result.ok) failed(result);
}

$("start").onclick = start;
$("stop").onclick = stop;
$("reset").onclick = reset;
$("save-image").onclick = saveImage;
$("save-config").onclick = () => saveConfig();
$("load-config").onclick = loadConfig;
$("path").addEventListener("keydown", (e) => { if (e.key === "Enter") saveConfig(); });

document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyS") { e.preventDefault(); start(); }
  else if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyX") { e.preventDefault(); stop(); }
  else if ((e.ctrlKey || e.metaKey) && !e.altKey && e.code === "KeyS") { e.preventDefault(); saveConfig(); }
});

// --- the image ----------------------------------------------------------------------------------------------

const image = $("image");

function showImage(blob) {
  const url = URL.createObjectURL(blob);
  const old = app.imageUrl;
  image.onload = () => {
    if (old) URL.revokeObjectURL(old);
    image.dataset.frames = String(++app.frames);
    $("resolution").textContent = `${image.naturalWidth}\u00d7${image.naturalHeight}`;
    layoutImage();
  };
  app.imageUrl = url;
  image.src = url;
}

function layoutImage() {
  const view = $("view");
  view.className = app.zoom;
  if (app.zoom === "one") {
    const dpr = window.devicePixelRatio || 1;  // one image pixel per device pixel
    image.style.width = `${image.naturalWidth / dpr}px`;
    image.style.height = `${image.naturalHeight / dpr}px`;
    image.classList.remove("up");
  } else {
    image.style.width = image.style.height = "";
    const scale = Math.min(view.clientWidth / image.naturalWidth, view.clientHeight / image.naturalHeight);
    image.classList.toggle("up", scale >= 1);
  }
  $("zoom-fit").classList.toggle("on", app.zoom === "fit");
  $("zoom-one").classList.toggle("on", app.zoom === "one");
}

function setZoom(zoom) { app.zoom = zoom; layoutImage(); }
$("zoom-fit").onclick = () => setZoom("fit");
$("zoom-one").onclick = () => setZoom("one");
image.ondblclick = () => setZoom(app.zoom === "fit" ? "one" : "fit");

// --- state from the server ----------------------------------------------------------------------------------

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "-";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? `${h}h${String(m % 60).padStart(2, "0")}m` : `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}

function onState(s) {
  app.state = s;
  const h = s.history;
  if (h.generation !== app.generation || h.from === 0) { app.points = []; app.generation = h.generation; }
  app.points.length = Math.min(app.points.length, h.from);
  app.points.push(...h.points);

  const status = $("status");
  status.textContent = s.status === "loading" ? "loading model" : s.status;
  status.className = "pill " + s.status;
  status.dataset.status = s.status;
  $("start").disabled = s.running;
  $("stop").disabled = !s.running || s.status === "stopping";
  $("message").textContent = s.message || "";
  $("message").title = s.message || "";

  const progress = s.epochs ? s.epoch / s.epochs : 0;
  $("bar-fill").style.width = `${(100 * progress).toFixed(1)}%`;
  const parts = [`epoch ${s.epoch} / ${s.epochs || "-"}`];
  if (s.running && s.rate) parts.push(`${s.rate.toFixed(1)} epochs/s`, `ETA ${duration(s.eta)}`);
  if (s.loss !== null && s.loss !== undefined) parts.push(`loss ${s.loss.toFixed(4)}`);
  if (s.runtime) parts.push(`run ${duration(s.runtime)}`);
  const text = $("progress-text");
  text.textContent = parts.join("  \u00b7  ");
  text.dataset.epoch = String(s.epoch);
  $("table").textContent = s.table || "statistics appear here while training";

  if (s.file && !$("path").value) $("path").value = s.file;
  if (s.status === "error" && s.error && s.error.line && !app.error) showProblem(s.error);
  renderSnapshots(s.snapshots);
  drawPlotsSoon();
}

function renderSnapshots(snapshots) {
  const key = snapshots.map((s) => s.id).join(",");
  if (key === app.snapshotsKey) return;
  app.snapshotsKey = key;
  const strip = $("snapshots");
  const atEnd = strip.scrollLeft + strip.clientWidth >= strip.scrollWidth - 8;
  strip.replaceChildren(...snapshots.map((snap) => {
    const b = document.createElement("button");
    b.className = "snap";
    b.title = `epoch ${snap.epoch}: click to go back to this image and epoch`;
    const img = document.createElement("img");
    img.src = `/api/snapshot/${snap.id}.png`;
    img.alt = `epoch ${snap.epoch}`;
    const label = document.createElement("span");
    label.textContent = String(snap.epoch);
    b.append(img, label);
    b.onclick = () => restore(snap.id);
    return b;
  }));
  if (atEnd) strip.scrollLeft = strip.scrollWidth;
}

// --- plots ----------------------------------------------------------------------------------------------------

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const step0 = span / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function plot(canvas, title, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#8a909c";
  g.textBaseline = "top";
  g.textAlign = "left";
  g.fillText(title, 8, 6);
  // legend: one line per series beside the title (above the plot)
  const legend = series.length > 1 ? series.slice(0, 4) : [];
  const lx = 8 + g.measureText(title).width + 16;
  legend.forEach((s, i) => {
    const label = s.label.length > 48 ? s.label.slice(0, 47) + "\u2026" : s.label;
    g.fillStyle = COLORS[i % COLORS.length];
    g.fillRect(lx, 11 + i * 13, 12, 3);
    g.fillStyle = "#c3c7cf";
    g.fillText(label + (i === 3 && series.length > 4 ? ` (+${series.length - 4} more)` : ""), lx + 16, 6 + i * 13);
  });
  const all = series.flatMap((s) => s.points);
  if (!all.length) { g.fillText("no data yet", 8, 22); return; }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const L = 48, R = 10, T = 14 + Math.max(1, legend.length) * 13, B = 20;
  const X = (x) => L + (x - x0) / (x1 - x0) * (w - L - R);
  const Y = (y) => h - B - (y - y0) / (y1 - y0) * (h - T - B);
  g.strokeStyle = "#2c3038";
  g.lineWidth = 1;
  g.textBaseline = "middle";
  g.textAlign = "right";
  const yTicks = niceTicks(y0, y1, Math.max(2, Math.floor((h - T - B) / 28)));
  const step = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
  const decimals = Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
  for (const t of yTicks) {
    const y = Math.round(Y(t)) + .5;
    g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
    g.fillText(t.toFixed(decimals), L - 5, y);
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor((w - L - R) / 70)))) {
    if (t !== Math.round(t)) continue;
    g.fillText(String(t), X(t), h - B + 4);
  }
  series.forEach((s, i) => {
    g.strokeStyle = COLORS[i % COLORS.length];
    g.lineWidth = 1.5;
    g.beginPath();
    s.points.forEach((p, j) => j ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1])));
    g.stroke();
  });
}

function withoutCommonPrefix(labels) {
  // "target: a cat", "target: a dog" -> "a cat", "a dog" (one target needs no name)
  const prefix = labels.length && labels.every((l) => l.startsWith(labels[0].split(": ")[0] + ": "))
    ? labels[0].split(": ")[0] + ": " : "";
  return labels.map((l) => l.slice(prefix.length));
}

function drawPlots() {
  const pts = app.points;
  plot($("loss-plot"), "loss", [{label: "loss", points: pts.map((p) => [p.e, p.l])}]);
  const labels = [];
  for (const p of pts) for (const k in p.s) if (!labels.includes(k)) labels.push(k);
  const shown = withoutCommonPrefix(labels);
  plot($("sim-plot"), "similarity %", labels.map((k, i) => ({
    label: shown[i], points: pts.filter((p) => k in p.s).map((p) => [p.e, p.s[k]]),
  })));
}

let plotFrame = 0;
function drawPlotsSoon() {
  if (!plotFrame) plotFrame = requestAnimationFrame(() => { plotFrame = 0; drawPlots(); });
}
window.addEventListener("resize", () => { drawPlotsSoon(); if (image.naturalWidth) layoutImage(); });

// --- the live connection --------------------------------------------------------------------------------------

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "blob";
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") return showImage(e.data);
    const message = JSON.parse(e.data);
    if (message.type === "hello") {
      if (!app.loaded) {  // a reconnect keeps the text being edited here
        app.loaded = true;
        app.savedText = message.saved;
        if (message.file) $("path").value = message.file;
        setText(message.draft);
      }
    } else if (message.type === "state") {
      onState(message);
    }
  };
  ws.onclose = () => {
    const status = $("status");
    status.textContent = "offline: reconnecting";
    status.className = "pill offline";
    status.dataset.status = "offline";
    setTimeout(connect, 1500);
  };
}

render();
drawPlots();
connect();
