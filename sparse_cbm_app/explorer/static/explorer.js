// The explorer's page: plain JavaScript over the JSON endpoints of sparse_cbm_app/explorer/server.py.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, side: 0, box: null, point: null, offset: 0, limit: 48, count: 0, seq: 0, img: new Image() };

function showError(message) {
  const el = $("error");
  el.textContent = message; el.hidden = !message;
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || body.detail && JSON.stringify(body.detail) || response.statusText);
  return body;
}

function bars(list, items, key) {
  list.innerHTML = "";
  const top = Math.max(...items.map((c) => Math.abs(c.value)), 1e-9);
  for (const c of items) {
    const li = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar" + (c.value < 0 ? " neg" : "");
    bar.style.width = `${Math.round(60 * Math.abs(c.value) / top)}px`;
    li.append(bar, `${c.concept} `);
    const v = document.createElement("small"); v.textContent = c.value.toFixed(3);
    li.append(v); li.dataset.concept = c.concept; list.append(li);
  }
}

async function loadGallery() {
  const page = await call(`/api/gallery?offset=${state.offset}&limit=${state.limit}`);
  state.count = page.count;
  const grid = $("gallery"); grid.innerHTML = "";
  for (const item of page.items) {
    const div = document.createElement("div");
    div.className = "thumb"; div.dataset.id = item.id;
    const img = document.createElement("img"); img.src = `/api/image/${item.id}.png`; img.alt = item.label;
    div.append(img, item.label);
    div.onclick = () => select(item.id);
    grid.append(div);
  }
  const pages = Math.max(1, Math.ceil(state.count / state.limit));
  $("page").textContent = `${Math.floor(state.offset / state.limit) + 1} / ${pages}`;
}

function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (state.img.complete && state.img.naturalWidth) ctx.drawImage(state.img, 0, 0, canvas.width, canvas.height);
  const s = canvas.width / state.side;
  ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 2;
  if (state.box) {
    const [x0, y0, x1, y1] = state.box;
    ctx.strokeRect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s);
  }
  if (state.point) {
    ctx.beginPath();
    ctx.arc(state.point[0] * s, state.point[1] * s, state.model.point_radius * canvas.width, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

async function select(id, side) {
  state.image = id; state.box = null; state.point = null;
  $("region-label").textContent = "region: whole image";
  document.querySelectorAll(".thumb").forEach((t) => t.classList.toggle("selected", t.dataset.id === id));
  state.img = new Image();
  state.img.onload = () => { state.side = side || state.img.naturalWidth; draw(); };
  state.img.src = `/api/image/${id}.png`;
  await state.img.decode().catch(() => {});
  state.side = side || state.img.naturalWidth;
  $("edit-slider").value = 0; $("edit-beta").textContent = "0 sd";
  await explain(true);
}

async function explain(chooseConcept) {
  if (!state.image) return;
  const seq = ++state.seq;
  const beta = parseFloat($("edit-slider").value);
  const body = { image: state.image, box: state.box, point: state.point, top: 3 };
  if (state.model.spatial && $("edit-concept").value) { body.concept = $("edit-concept").value; body.beta = beta; }
  if (chooseConcept) { delete body.concept; delete body.beta; }
  document.body.classList.add("busy");
  try {
    const r = await call("/api/explain", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (seq !== state.seq) return;  // a newer request is on its way
    showError("");
    render(r, chooseConcept);
  } catch (e) {
    if (seq === state.seq) showError(e.message);
  } finally {
    if (seq === state.seq) document.body.classList.remove("busy");
  }
}

function render(r, chooseConcept) {
  $("truth").textContent = r.truth || "unknown (uploaded)";
  $("cbm-prediction").textContent = r.cbm.prediction;
  $("cbm-probability").textContent = `(${(100 * r.cbm.probability).toFixed(1)}%)`;
  $("cbm-ranking").textContent = `concepts by ${r.cbm.ranking}`;
  bars($("cbm-concepts"), r.cbm.concepts);
  if (!r.salf) return;
  $("salf-region").textContent = r.salf.region;
  $("salf-prediction").textContent = r.salf.prediction;
  $("salf-probability").textContent = `(${(100 * r.salf.probability).toFixed(1)}%)`;
  $("salf-ranking").textContent = `concepts by ${r.salf.ranking}`;
  bars($("region-concepts"), r.salf.concepts);
  const heat = $("heatmaps"); heat.innerHTML = "";
  for (const [name, src] of Object.entries(r.salf.heatmaps)) {
    const div = document.createElement("div"); div.className = "heat";
    const stack = document.createElement("div"); stack.className = "stack";
    const base = document.createElement("img"); base.src = `/api/image/${r.image}.png`;
    const over = document.createElement("img"); over.src = src; over.className = "overlay"; over.alt = name;
    stack.append(base, over); div.append(stack, name); heat.append(div);
  }
  if (chooseConcept && r.salf.concepts.length) $("edit-concept").value = r.salf.concepts[0].concept;
  const edited = r.edit || { prediction: r.salf.prediction, probability: r.salf.probability, classes: r.salf.classes };
  $("edited-prediction").textContent = edited.prediction;
  $("edited-probability").textContent = `(${(100 * edited.probability).toFixed(1)}%)`;
  const after = Object.fromEntries(edited.classes.map((c) => [c.class, c.p]));
  const before = Object.fromEntries(r.salf.classes.map((c) => [c.class, c.p]));
  const names = [...new Set([...r.salf.classes.map((c) => c.class), ...edited.classes.map((c) => c.class)])];
  const body = $("class-scores").tBodies[0];
  body.replaceChildren(...names.map((n) => {  // text nodes only: names come from folders and concept sources
    const row = document.createElement("tr");
    for (const text of [n, before[n] !== undefined ? before[n].toFixed(3) : "<top 5",
                        after[n] !== undefined ? after[n].toFixed(3) : "<top 5"]) {
      const cell = document.createElement("td"); cell.textContent = text; row.append(cell);
    }
    return row;
  }));
}

function canvasPoint(event) {
  const rect = $("canvas").getBoundingClientRect();
  const s = state.side / rect.width;
  return [Math.min(Math.max((event.clientX - rect.left) * s, 0), state.side),
          Math.min(Math.max((event.clientY - rect.top) * s, 0), state.side)];
}

function setupCanvas() {
  const canvas = $("canvas");
  let start = null;
  canvas.addEventListener("mousedown", (e) => { if (state.image) start = canvasPoint(e); });
  canvas.addEventListener("mousemove", (e) => {
    if (!start) return;
    const p = canvasPoint(e);
    state.box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    state.point = null; draw();
  });
  window.addEventListener("mouseup", (e) => {
    if (!start) return;
    const p = canvasPoint(e);
    const box = [Math.floor(Math.min(start[0], p[0])), Math.floor(Math.min(start[1], p[1])),
                 Math.ceil(Math.max(start[0], p[0])), Math.ceil(Math.max(start[1], p[1]))];
    const click = Math.abs(p[0] - start[0]) < 1 && Math.abs(p[1] - start[1]) < 1;
    start = null;
    if (click) {  // a click: the disc around the point
      state.box = null; state.point = [Math.floor(p[0]), Math.floor(p[1])]; draw();
      $("region-label").textContent = `region: point ${state.point.join(", ")}`;
    } else {
      state.box = box; state.point = null; draw();
      $("region-label").textContent = `region: box ${box.join(", ")}`;
    }
    explain(true);
  });
}

async function init() {
  setupCanvas();
  $("whole").onclick = () => { state.box = null; state.point = null; draw(); $("region-label").textContent = "region: whole image"; explain(true); };
  let timer = null;
  $("edit-slider").addEventListener("input", () => {
    $("edit-beta").textContent = `${$("edit-slider").value} sd`;
    clearTimeout(timer); timer = setTimeout(() => explain(false), 60);
  });
  $("edit-concept").addEventListener("change", () => explain(false));
  $("prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); loadGallery(); };
  $("next").onclick = () => { if (state.offset + state.limit < state.count) { state.offset += state.limit; loadGallery(); } };
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const r = await call("/api/upload", { method: "POST", body: file });
      document.querySelectorAll(".thumb").forEach((t) => t.classList.remove("selected"));
      await select(r.id, r.side);
    } catch (err) { showError(err.message); }
    e.target.value = "";
  });
  try {
    state.model = await call("/api/model");
    $("summary").textContent = state.model.summary;
    $("gallery-title").textContent = state.model.gallery.name ? `Images (${state.model.gallery.name})` : "Images";
    if (!state.model.spatial) { $("salf-column").hidden = true; $("edit-panel").hidden = true; }
    $("edit-concept").replaceChildren(...(state.model.spatial_concepts || []).map((c) => new Option(c, c)));
    await loadGallery();
  } catch (e) { showError(e.message); }
}

init();
