// alignsam's page: segment an image by hovering, clicking, boxing and scribbling; find by text; label every
// mask; tags; search the server's index. Plain JavaScript, no build step, no network but this server.
"use strict";

const $ = (selector) => document.querySelector(selector);
const PALETTE = [
  [79, 140, 255], [62, 207, 142], [255, 184, 79], [255, 93, 108], [177, 120, 255], [45, 212, 218],
  [255, 138, 61], [200, 230, 80], [255, 120, 200], [120, 200, 255], [160, 160, 255], [255, 220, 120],
];
const ACCENT = [79, 140, 255];
const HOVER = [255, 255, 255];

const state = {
  token: localStorage.getItem("alignsam-token") || "",
  vocab: localStorage.getItem("alignsam-vocab") || "",
  tool: "point",
  hover: true,
  image: null, // {id, width, height, name, element}
  ready: false,
  prompts: { points: [], box: null, scribbles: [] },
  result: null, // {candidates: [{mask_id, score, area, bbox, segmentation, mask}], chosen, source, label}
  history: [],
  hoverMask: null,
  labels: null, // {annotations, layer, centroids}
  drag: null,
  busy: 0,
  seq: 0,
  hoverSeq: 0,
  hoverTimer: 0,
  hoverAbort: null,
  searchImage: null, // {image: dataURL} or {image_id}
  view: { scale: 1, dpr: 1 },
};

// --- the server ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function busy(delta) {
  state.busy += delta;
  document.body.dataset.busy = state.busy > 0 ? "1" : "0";
}

async function api(path, body, options = {}) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const init = { method: body === undefined ? "GET" : "POST", headers, signal: options.signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (!options.quiet) busy(+1);
  try {
    const response = await fetch(path, init);
    if (response.status === 401) {
      openSettings("This server needs an access token.");
      throw new ApiError("An access token is needed (Settings).", 401);
    }
    if (options.blob && response.ok) return await response.blob();
    let data;
    try {
      data = await response.json();
    } catch (e) {
      throw new ApiError(`${response.status} ${response.statusText}`, response.status);
    }
    if (!response.ok) throw new ApiError(data.error || response.statusText, response.status);
    return data;
  } finally {
    if (!options.quiet) busy(-1);
  }
}

let statusTimer = 0;
function status(message, error = false, ms = 2600) {
  const el = $("#status");
  el.textContent = message;
  el.classList.toggle("error", error);
  el.classList.add("show");
  clearTimeout(statusTimer);
  if (ms) statusTimer = setTimeout(() => el.classList.remove("show"), ms);
}

function fail(err) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  status(err && err.message ? err.message : String(err), true, 6000);
}

// --- masks ----------------------------------------------------------------------------------------------------

async function decodeMask(b64) {
  const img = new Image();
  img.src = "data:image/png;base64," + b64;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = img.width;
  c.height = img.height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  const values = new Uint8Array(c.width * c.height);
  for (let i = 0; i < values.length; i++) values[i] = px[4 * i];
  return { w: c.width, h: c.height, values };
}

// A canvas at the image's size: `colourOf(v)` for each pixel value v > 0 (or null), outlines solid.
function paint(mask, colourOf, alpha) {
  const { w, h, values } = mask;
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d");
  const out = ctx.createImageData(w, h);
  const d = out.data;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const v = values[i];
      if (!v) continue;
      const rgb = colourOf(v);
      if (!rgb) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || values[i - 1] !== v || values[i + 1] !== v
        || values[i - w] !== v || values[i + w] !== v;
      d[4 * i] = rgb[0];
      d[4 * i + 1] = rgb[1];
      d[4 * i + 2] = rgb[2];
      d[4 * i + 3] = edge ? 255 : Math.round(255 * alpha);
    }
  }
  ctx.putImageData(out, 0, 0);
  return c;
}

// COCO's compressed RLE of a mask (as `alignsam.io.rle.encode_rle`): run lengths in column-major order from a
// run of zeros, each stored minus the run two before it (from the fourth on) in 5-bit groups, char 48 + group.
function cocoRle(mask) {
  const { w, h, values } = mask;
  const runs = [];
  let last = 0;
  let run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = values[y * w + x] ? 1 : 0;
      if (v !== last) {
        runs.push(run);
        run = 0;
        last = v;
      }
      run++;
    }
  }
  runs.push(run);
  let out = "";
  runs.forEach((r, i) => {
    let x = i > 2 ? r - runs[i - 2] : r;
    for (let more = true; more; ) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift, as pycocotools on a signed long
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  });
  return { size: [h, w], counts: out };
}

function binary(mask) {
  return { w: mask.w, h: mask.h, values: mask.values.map((v) => (v > 127 ? 1 : 0)) };
}

async function toCandidate(item) {
  const mask = binary(await decodeMask(item.png));
  return { ...item, mask, layer: paint(mask, () => ACCENT, 0.42) };
}

// --- the image ------------------------------------------------------------------------------------------------

const imageCanvas = $("#image-canvas");
const overlay = $("#overlay-canvas");

async function openFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) return status(`${file.name} is not an image.`, true);
  const element = new Image();
  element.src = URL.createObjectURL(file);
  try {
    await element.decode();
  } catch (e) {
    return status(`${file.name} could not be read as an image.`, true);
  }
  clearImage();
  $("#drop").classList.add("hidden");
  $("#stage").classList.remove("hidden");
  showProgress(0);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const info = await api("/images", form);
    state.image = { id: info.id, width: info.width, height: info.height, name: file.name, element };
    layout();
    status(info.shared ? "This image is already embedded." : "Embedding the image…", false, 1800);
    await waitReady(info.id);
    loadTags();
  } catch (err) {
    hideProgress();
    fail(err);
  }
}

function clearImage() {
  state.image = null;
  state.ready = false;
  state.prompts = { points: [], box: null, scribbles: [] };
  state.result = null;
  state.history = [];
  state.hoverMask = null;
  state.labels = null;
  $("#candidates").innerHTML = '<p class="muted small">Click the image to get SAM\'s masks.</p>';
  renderLabels();
  $("#tags").innerHTML = "";
  $("#find-results").innerHTML = "";
}

async function waitReady(id) {
  for (;;) {
    const info = await api(`/images/${id}`, undefined, { quiet: true });
    if (!state.image || state.image.id !== id) return;
    if (info.status === "ready") {
      state.ready = true;
      hideProgress();
      status("Ready: hover to preview, click to select.", false, 2200);
      return;
    }
    if (info.status === "failed") {
      hideProgress();
      throw new ApiError(info.error || "The embedding failed.", 503);
    }
    showProgress(info.progress);
    await new Promise((r) => setTimeout(r, 120));
  }
}

function showProgress(share) {
  $("#progress").classList.remove("hidden");
  $("#progress-fill").style.width = `${Math.round(100 * share)}%`;
  $("#progress-text").textContent = `Embedding the image… ${Math.round(100 * share)}%`;
  $("#progress").setAttribute("aria-valuenow", String(Math.round(100 * share)));
}

function hideProgress() {
  $("#progress").classList.add("hidden");
}

function layout() {
  if (!state.image) return;
  const wrap = $(".stage-wrap");
  const { width: W, height: H } = state.image;
  const scale = Math.min((wrap.clientWidth - 40) / W, (wrap.clientHeight - 40) / H);
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(W * scale));
  const h = Math.max(1, Math.round(H * scale));
  for (const c of [imageCanvas, overlay]) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    c.style.width = `${w}px`;
    c.style.height = `${h}px`;
  }
  state.view = { scale, dpr };
  const ctx = imageCanvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale < 2.5; // small images scaled up stay crisp
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(state.image.element, 0, 0, imageCanvas.width, imageCanvas.height);
  redraw();
}

// image pixels <-> overlay canvas pixels
function toImage(event) {
  const rect = overlay.getBoundingClientRect();
  const { width: W, height: H } = state.image;
  const x = Math.min(Math.max(((event.clientX - rect.left) / rect.width) * W, 0), W - 0.01);
  const y = Math.min(Math.max(((event.clientY - rect.top) / rect.height) * H, 0), H - 0.01);
  return [x, y];
}

function toCanvas([x, y]) {
  const k = overlay.width / state.image.width;
  return [x * k, y * k];
}

// --- drawing ----------------------------------------------------------------------------------------------------

function current() {
  const r = state.result;
  return r ? r.candidates[r.chosen] : null;
}

function redraw() {
  if (!state.image) return;
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  ctx.imageSmoothingEnabled = false;
  const full = [0, 0, overlay.width, overlay.height];
  if (state.labels) ctx.drawImage(state.labels.layer, ...full);
  const prompted = hasPrompts();
  if (state.hoverMask && !prompted && !state.result) {
    ctx.globalAlpha = 0.75;
    ctx.drawImage(state.hoverMask, ...full);
    ctx.globalAlpha = 1;
  }
  const chosen = current();
  if (chosen) ctx.drawImage(chosen.layer, ...full);
  if (state.labels) drawLabels(ctx);
  if (chosen && state.result.label) drawTag(ctx, state.result.label, centroidOf(chosen.mask), ACCENT);
  drawPrompts(ctx);
}

function drawPrompts(ctx) {
  const dpr = state.view.dpr;
  const { points, box, scribbles } = state.prompts;
  ctx.lineWidth = 2 * dpr;
  for (const s of scribbles) polyline(ctx, s.line, s.label ? "#3ecf8e" : "#ff5d6c");
  if (state.drag && state.drag.line) polyline(ctx, state.drag.line, state.drag.label ? "#3ecf8e" : "#ff5d6c");
  const rect = (b, dash) => {
    const [x0, y0] = toCanvas([b[0], b[1]]);
    const [x1, y1] = toCanvas([b[2], b[3]]);
    ctx.setLineDash(dash);
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 2 * dpr;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  };
  if (box) rect(box, []);
  if (state.drag && state.drag.box) rect(state.drag.box, [6 * dpr, 4 * dpr]);
  for (const [x, y, label] of points) {
    const [cx, cy] = toCanvas([x, y]);
    ctx.beginPath();
    ctx.arc(cx, cy, 7 * dpr, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#3ecf8e" : "#ff5d6c";
    ctx.fill();
    ctx.lineWidth = 2 * dpr;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(cx - 3.5 * dpr, cy);
    ctx.lineTo(cx + 3.5 * dpr, cy);
    if (label) {
      ctx.moveTo(cx, cy - 3.5 * dpr);
      ctx.lineTo(cx, cy + 3.5 * dpr);
    }
    ctx.stroke();
  }
}

function polyline(ctx, line, colour) {
  if (line.length < 2) return;
  ctx.beginPath();
  line.forEach((p, i) => {
    const [x, y] = toCanvas(p);
    if (i) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
  });
  ctx.strokeStyle = colour;
  ctx.lineWidth = 3 * state.view.dpr;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.stroke();
}

function centroidOf(mask) {
  let sx = 0, sy = 0, n = 0;
  for (let y = 0; y < mask.h; y++) {
    for (let x = 0; x < mask.w; x++) {
      if (mask.values[y * mask.w + x]) {
        sx += x;
        sy += y;
        n++;
      }
    }
  }
  return n ? [sx / n + 0.5, sy / n + 0.5] : null;
}

function drawTag(ctx, text, at, rgb, taken = null) {
  if (!at) return;
  const dpr = state.view.dpr;
  const [x, y] = toCanvas(at);
  ctx.font = `600 ${12 * dpr}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width + 12 * dpr;
  const h = 20 * dpr;
  if (taken) {  // labels never cover each other: a label that would is left out (its mask is in the list)
    const box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2];
    if (taken.some((b) => box[0] < b[2] && b[0] < box[2] && box[1] < b[3] && b[1] < box[3])) return;
    taken.push(box);
  }
  ctx.fillStyle = "rgba(15, 17, 21, 0.85)";
  ctx.beginPath();
  ctx.roundRect(x - w / 2, y - h / 2, w, h, 6 * dpr);
  ctx.fill();
  ctx.strokeStyle = `rgb(${rgb.join(",")})`;
  ctx.lineWidth = 1.5 * dpr;
  ctx.stroke();
  ctx.fillStyle = "#fff";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x, y + 0.5 * dpr);
}

function drawLabels(ctx) {
  const { annotations, centroids, visible } = state.labels;
  const taken = [];
  // the most visible masks are named first; a mask mostly hidden under smaller ones gets no label
  const order = annotations.map((_, k) => k).sort((a, b) => visible[b] - visible[a]);
  for (const k of order) {
    if (centroids[k] && visible[k] >= 0.3 * annotations[k].area) {
      drawTag(ctx, annotations[k].class_name, centroids[k], PALETTE[k % PALETTE.length], taken);
    }
  }
}

// --- prompts ----------------------------------------------------------------------------------------------------

function hasPrompts() {
  const p = state.prompts;
  return p.points.length > 0 || p.box !== null || p.scribbles.length > 0;
}

function snapshot() {
  state.history.push({ prompts: structuredClone(state.prompts), result: state.result, labels: state.labels });
  if (state.history.length > 100) state.history.shift();
}

function changePrompts(change) {
  if (!state.image) return;
  snapshot();
  change(state.prompts);
  state.hoverMask = null;
  redraw();
  segment();
}

async function segment() {
  const seq = ++state.seq;
  if (!hasPrompts()) {
    state.result = null;
    renderCandidates();
    redraw();
    return;
  }
  const { points, box, scribbles } = state.prompts;
  const body = { points, scribbles, output: ["png"] }; // COCO RLE is made here when it is downloaded
  if (box) body.box = box;
  const previous = state.result && state.result.source === "prompt" ? current() : null;
  if (previous) body.mask_input = previous.mask_id; // SAM refines its last mask with the new prompts
  try {
    const r = await api(`/images/${state.image.id}/segment`, body);
    if (seq !== state.seq) return;
    const candidates = await Promise.all(r.candidates.map(toCandidate));
    if (seq !== state.seq) return;
    state.result = { candidates, chosen: 0, source: "prompt" };
    renderCandidates();
    redraw();
  } catch (err) {
    if (seq === state.seq) fail(err);
  }
}

function choose(k) {
  const r = state.result;
  if (!r || k >= r.candidates.length) return;
  snapshot();
  r.chosen = k;
  renderCandidates();
  redraw();
}

function undo() {
  const last = state.history.pop();
  if (!last) return status("Nothing to undo.");
  state.seq++;
  state.prompts = last.prompts;
  state.result = last.result;
  state.labels = last.labels;
  renderCandidates();
  renderLabels();
  redraw();
}

function resetPrompts() {
  if (!hasPrompts() && !state.result && !state.labels) return;
  snapshot();
  state.seq++;
  state.prompts = { points: [], box: null, scribbles: [] };
  state.result = null;
  state.labels = null;
  $("#find-results").innerHTML = "";
  renderCandidates();
  renderLabels();
  redraw();
}

function renderCandidates() {
  const box = $("#candidates");
  box.innerHTML = "";
  const r = state.result;
  if (!r) {
    box.innerHTML = '<p class="muted small">Click the image to get SAM\'s masks.</p>';
    return;
  }
  r.candidates.forEach((c, k) => {
    const el = document.createElement("button");
    el.className = "candidate" + (k === r.chosen ? " active" : "");
    el.title = `Candidate ${k + 1}: predicted IoU ${c.score.toFixed(3)}, ${c.area} px`;
    const thumb = document.createElement("canvas");
    const size = 120;
    const { width: W, height: H } = state.image;
    const s = size / Math.max(W, H);
    thumb.width = Math.round(W * s);
    thumb.height = Math.round(H * s);
    const t = thumb.getContext("2d");
    t.drawImage(state.image.element, 0, 0, thumb.width, thumb.height);
    t.imageSmoothingEnabled = false;
    t.drawImage(c.layer, 0, 0, thumb.width, thumb.height);
    el.append(thumb, `${k + 1} · ${c.score.toFixed(2)}`);
    el.addEventListener("click", () => choose(k));
    box.append(el);
  });
}

// --- hover ------------------------------------------------------------------------------------------------------

function scheduleHover(event) {
  clearTimeout(state.hoverTimer);
  if (!state.hover || !state.ready || hasPrompts() || state.result || state.drag) return;
  const at = toImage(event);
  state.hoverTimer = setTimeout(() => hover(at), 70);
}

async function hover([x, y]) {
  if (state.hoverAbort) state.hoverAbort.abort();
  const abort = new AbortController();
  state.hoverAbort = abort;
  const seq = ++state.hoverSeq;
  try {
    const body = { points: [[x, y, 1]], output: ["png"], max_candidates: 1 };
    const r = await api(`/images/${state.image.id}/segment`, body, { signal: abort.signal, quiet: true });
    if (seq !== state.hoverSeq || hasPrompts() || state.result) return;
    const mask = binary(await decodeMask(r.candidates[0].png));
    state.hoverMask = paint(mask, () => HOVER, 0.3);
    redraw();
  } catch (err) {
    if (err.name !== "AbortError") console.debug("hover:", err.message);
  }
}

// --- pointer ----------------------------------------------------------------------------------------------------

overlay.addEventListener("contextmenu", (e) => e.preventDefault());
overlay.addEventListener("pointerdown", (event) => {
  if (!state.image) return;
  overlay.setPointerCapture(event.pointerId);
  const at = toImage(event);
  const negative = event.shiftKey || event.button === 2;
  state.drag = { start: at, startPx: [event.clientX, event.clientY], negative, moved: false };
  if (state.tool === "scribble") state.drag.line = [at];
  state.drag.label = negative ? 0 : 1;
  clearTimeout(state.hoverTimer);
});
overlay.addEventListener("pointermove", (event) => {
  if (!state.image) return;
  const d = state.drag;
  if (!d) return scheduleHover(event);
  const at = toImage(event);
  const far = Math.hypot(event.clientX - d.startPx[0], event.clientY - d.startPx[1]) > 5;
  d.moved = d.moved || far;
  if (!d.moved) return;
  if (state.tool === "scribble") d.line.push(at);
  else d.box = [Math.min(d.start[0], at[0]), Math.min(d.start[1], at[1]), Math.max(d.start[0], at[0]), Math.max(d.start[1], at[1])];
  redraw();
});
overlay.addEventListener("pointerup", (event) => {
  const d = state.drag;
  state.drag = null;
  if (!d || !state.image) return;
  const label = d.negative ? 0 : 1;
  if (!d.moved) {
    const [x, y] = d.start;
    changePrompts((p) => p.points.push([round(x), round(y), label]));
  } else if (state.tool === "scribble" && d.line.length > 1) {
    const line = d.line.map(([x, y]) => [round(x), round(y)]);
    changePrompts((p) => p.scribbles.push({ line, label }));
  } else if (d.box && d.box[2] - d.box[0] > 1 && d.box[3] - d.box[1] > 1) {
    const box = d.box.map(round);
    changePrompts((p) => (p.box = box));
  } else redraw();
});
overlay.addEventListener("pointerleave", () => {
  clearTimeout(state.hoverTimer);
  if (state.hoverMask && !hasPrompts()) {
    state.hoverMask = null;
    redraw();
  }
});

function round(v) {
  return Math.round(v * 10) / 10;
}

function setTool(tool) {
  state.tool = tool;
  document.querySelectorAll(".tool[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
}

// --- find, label, tags -------------------------------------------------------------------------------------------

function vocabulary() {
  return state.vocab.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
}

async function find(text) {
  if (!state.image) return status("Open an image first.", true);
  if (!text.trim()) return;
  const seq = ++state.seq;
  try {
    const r = await api(`/images/${state.image.id}/find`, { text, top_k: 3, output: ["png"] });
    if (seq !== state.seq) return;
    if (!r.matches.length) return status(`Nothing found for "${text}".`, true);
    const candidates = await Promise.all(
      r.matches.map((m) => toCandidate({ ...m, mask_id: null, score: m.score, png: m.png })),
    );
    snapshot();
    state.prompts = { points: [], box: null, scribbles: [] };
    state.labels = null;
    state.result = { candidates, chosen: 0, source: "find", label: text };
    renderCandidates();
    const list = $("#find-results");
    list.innerHTML = "";
    r.matches.forEach((m, k) => {
      const item = document.createElement("div");
      item.className = "item";
      item.dataset.rank = String(k);
      item.innerHTML = `<span class="swatch"></span><span>match ${k + 1}</span>
        <span class="score">${(100 * m.probability).toFixed(0)}%</span>`;
      item.querySelector(".swatch").style.background = `rgb(${ACCENT.join(",")})`;
      item.addEventListener("click", () => choose(k));
      list.append(item);
    });
    redraw();
    status(`Found "${text}" (${(100 * r.matches[0].probability).toFixed(0)}% sure among ${r.candidates} masks).`);
  } catch (err) {
    fail(err);
  }
}

async function labelAll() {
  if (!state.image) return status("Open an image first.", true);
  status("Labelling every mask…", false, 0);
  const body = { output: ["png", "rle"], top_k: 3 };
  const vocab = vocabulary();
  if (vocab.length) body.labels = vocab;
  try {
    const r = await api(`/images/${state.image.id}/label`, body);
    const map = await decodeMask(r.label_map);
    const n = r.annotations.length;
    const layer = paint(map, (v) => (v <= n ? PALETTE[(v - 1) % PALETTE.length] : null), 0.38);
    const sums = Array.from({ length: n }, () => [0, 0, 0]);
    for (let y = 0; y < map.h; y++) {
      for (let x = 0; x < map.w; x++) {
        const v = map.values[y * map.w + x];
        if (v && v <= n) {
          sums[v - 1][0] += x;
          sums[v - 1][1] += y;
          sums[v - 1][2]++;
        }
      }
    }
    const centroids = sums.map(([sx, sy, c]) => (c ? [sx / c + 0.5, sy / c + 0.5] : null));
    snapshot();
    state.seq++;
    state.prompts = { points: [], box: null, scribbles: [] };
    state.result = null;
    renderCandidates();
    state.labels = { annotations: r.annotations, layer, centroids, visible: sums.map((x) => x[2]) };
    renderLabels();
    redraw();
    status(`${n} masks labelled.`);
  } catch (err) {
    fail(err);
  }
}

function renderLabels() {
  const list = $("#labels");
  list.innerHTML = "";
  if (!state.labels) {
    list.innerHTML = '<p class="muted small">Press <kbd>L</kbd> to label every mask.</p>';
    return;
  }
  const { annotations } = state.labels;
  if (!annotations.length) list.innerHTML = '<p class="muted small">No masks were found.</p>';
  annotations.forEach((a, k) => {
    const item = document.createElement("div");
    item.className = "item label";
    const p = a.class_proposals && a.class_proposals[0] ? a.class_proposals[0].score : 0;
    item.innerHTML = `<span class="swatch"></span><span class="name"></span>
      <span class="score">${(100 * p).toFixed(0)}%</span>`;
    item.querySelector(".swatch").style.background = `rgb(${PALETTE[k % PALETTE.length].join(",")})`;
    item.querySelector(".name").textContent = a.class_name;
    list.append(item);
  });
}

async function loadTags() {
  if (!state.image) return;
  const id = state.image.id;
  const body = { max_tags: 6 };
  const vocab = vocabulary();
  if (vocab.length >= 2) body.vocab = vocab;
  try {
    const r = await api(`/images/${id}/tags`, body);
    if (!state.image || state.image.id !== id) return;
    const chips = $("#tags");
    chips.innerHTML = "";
    for (const t of r.results[0] ? r.results[0].tags : []) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = t.tag;
      const z = document.createElement("b");
      z.textContent = t.z.toFixed(1);
      z.title = "z-score among the vocabulary";
      chip.append(z);
      chips.append(chip);
    }
  } catch (err) {
    fail(err);
  }
}

// --- downloads ---------------------------------------------------------------------------------------------------

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function stem() {
  return (state.image ? state.image.name : "image").replace(/\.[^.]+$/, "");
}

function downloadMask() {
  const c = current();
  if (!c) return status("No mask yet: click on an object first.", true);
  const { w, h, values } = c.mask;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < values.length; i++) {
    const v = values[i] ? 255 : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  canvas.toBlob((blob) => save(blob, `${stem()}-mask.png`), "image/png");
}

async function downloadCoco() {
  if (!state.image) return status("Open an image first.", true);
  try {
    let annotations;
    if (state.labels) annotations = state.labels.annotations;
    else annotations = (await api(`/images/${state.image.id}/masks`, { output: ["rle"] })).annotations;
    annotations = annotations.map((a, k) => ({ ...a, id: k }));
    const c = current();
    if (c) {
      annotations.push({ id: annotations.length, segmentation: cocoRle(c.mask), bbox: c.bbox, area: c.area,
        predicted_iou: c.score, source: state.result.source, ...(state.result.label ? { class_name: state.result.label } : {}) });
    }
    const record = { image: { file_name: state.image.name, width: state.image.width, height: state.image.height }, annotations };
    save(new Blob([JSON.stringify(record)], { type: "application/json" }), `${stem()}-masks.json`);
  } catch (err) {
    fail(err);
  }
}

// --- search ------------------------------------------------------------------------------------------------------

async function search() {
  const text = $("#search-text").value.trim();
  const body = { k: 24 };
  if (text) body.text = text;
  if (state.searchImage) Object.assign(body, state.searchImage.query);
  if (!text && !state.searchImage) return;
  const grid = $("#results");
  try {
    const r = await api("/search", body);
    const parts = [text && `"${text}"`, state.searchImage && state.searchImage.name].filter(Boolean);
    $("#search-query").textContent = `${r.results.length} of ${r.index_size} images for ${parts.join(" + ")}`;
    grid.innerHTML = "";
    r.results.forEach((hit, k) => {
      const card = document.createElement("figure");
      card.className = "result";
      card.dataset.path = hit.path;
      card.dataset.rank = String(k);
      const img = document.createElement("img");
      img.alt = hit.path;
      const meta = document.createElement("figcaption");
      meta.className = "meta";
      meta.innerHTML = `<span class="rank">#${k + 1}</span><span class="name"></span><span>${hit.score.toFixed(3)}</span>`;
      meta.querySelector(".name").textContent = hit.path.split("/").pop();
      meta.title = hit.path;
      card.append(img, meta);
      grid.append(card);
      api(hit.thumbnail, undefined, { blob: true, quiet: true })
        .then((blob) => (img.src = URL.createObjectURL(blob)))
        .catch((err) => console.debug("thumbnail:", err.message));
    });
  } catch (err) {
    $("#search-query").textContent = err.message;
    fail(err);
  }
}

function setSearchImage(value) {
  state.searchImage = value;
  const label = $("#search-image-label");
  label.textContent = value ? value.name : "+ image";
  label.parentElement.classList.toggle("set", Boolean(value));
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// --- views, dialogs, keys ---------------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  $("#view-segment").classList.toggle("hidden", name !== "segment");
  $("#view-search").classList.toggle("hidden", name !== "search");
  if (name === "segment") layout();
  else $("#search-text").focus();
}

function openSettings(message) {
  $("#vocab").value = state.vocab;
  $("#token").value = state.token;
  $("#settings").classList.remove("hidden");
  if (message) status(message, true, 5000);
  (message ? $("#token") : $("#vocab")).focus();
}

function closeDialogs() {
  $("#help").classList.add("hidden");
  $("#settings").classList.add("hidden");
}

document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
document.querySelectorAll(".tool[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
document.querySelectorAll(".overlay .close").forEach((b) => b.addEventListener("click", closeDialogs));
$("#undo").addEventListener("click", undo);
$("#reset").addEventListener("click", resetPrompts);
$("#label-all").addEventListener("click", labelAll);
$("#download-mask").addEventListener("click", downloadMask);
$("#download-coco").addEventListener("click", downloadCoco);
$("#open-help").addEventListener("click", () => $("#help").classList.remove("hidden"));
$("#open-settings").addEventListener("click", () => openSettings());
for (const id of ["#file-input", "#file-input-2"]) {
  $(id).addEventListener("change", (e) => {
    openFile(e.target.files[0]);
    e.target.value = "";
  });
}
$("#find-form").addEventListener("submit", (e) => {
  e.preventDefault();
  find($("#find-text").value);
});
$("#search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  search();
});
$("#search-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (file) setSearchImage({ name: file.name, query: { image: await readAsDataURL(file) } });
});
$("#search-use-current").addEventListener("click", () => {
  if (!state.image) return status("Open an image in Segment first.", true);
  setSearchImage({ name: state.image.name, query: { image_id: state.image.id } });
});
$("#search-clear").addEventListener("click", () => setSearchImage(null));
$("#settings-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.vocab = $("#vocab").value;
  state.token = $("#token").value.trim();
  localStorage.setItem("alignsam-vocab", state.vocab);
  localStorage.setItem("alignsam-token", state.token);
  closeDialogs();
  status("Settings saved.");
  loadHealth();
  if (state.image && state.ready) loadTags();
});

const drop = $("#view-segment");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  $("#drop").classList.add("over");
});
drop.addEventListener("dragleave", () => $("#drop").classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  $("#drop").classList.remove("over");
  openFile(e.dataTransfer.files[0]);
});
window.addEventListener("resize", layout);

document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (e.key === "Escape") {
    if (!$("#help").classList.contains("hidden") || !$("#settings").classList.contains("hidden")) return closeDialogs();
    if (typing) return document.activeElement.blur();
    return resetPrompts();
  }
  if (typing || e.altKey || e.metaKey) return;
  if (e.ctrlKey) {
    if (e.key === "z") {
      e.preventDefault();
      undo();
    }
    return;
  }
  const actions = {
    "?": () => $("#help").classList.toggle("hidden"),
    p: () => setTool("point"),
    b: () => setTool("box"),
    s: () => setTool("scribble"),
    u: undo,
    r: resetPrompts,
    l: labelAll,
    h: () => {
      state.hover = !state.hover;
      state.hoverMask = null;
      redraw();
      status(`Hover preview ${state.hover ? "on" : "off"}.`);
    },
    f: () => $("#find-text").focus(),
    d: downloadMask,
    D: downloadCoco,
    o: () => $("#file-input").click(),
    g: () => showTab($("#view-search").classList.contains("hidden") ? "search" : "segment"),
    1: () => choose(0),
    2: () => choose(1),
    3: () => choose(2),
  };
  const action = actions[e.key] || actions[e.key.toLowerCase()];
  if (action && !(e.key === "d" && e.shiftKey)) {
    e.preventDefault();
    action();
  }
});

async function loadHealth() {
  try {
    const h = await api("/health", undefined, { quiet: true });
    $("#models").textContent = `ALIGN ${h.models.align} · SAM ${h.models.sam}`;
    $("#tab-search").title = h.index ? `${h.index.images} images in the index` : "No index (start the server with --index DIR)";
  } catch (err) {
    $("#models").textContent = "server unreachable";
  }
}

loadHealth();
