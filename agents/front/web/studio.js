// The studio page: one card per channel, the studio strip and the last hour's plots, kept live by the
// server-sent events of /studio/api/events (one sample a second). No library and no build: plots are
// drawn as inline SVG from the studio's own history (/studio/api/history, then each sample's point).
"use strict";

const WINDOW_S = 3600;
const THUMB_EVERY_MS = 300; // ~3 pictures a second per card: enough to see it move, cheap to make
const COLOURS = ["#7c9cff", "#6fdc8c", "#ffb86b", "#ff7a7a", "#c792ea", "#5ee0e0", "#f0e07a", "#ff9ad5"];
const SVG = "http://www.w3.org/2000/svg";

const cards = new Map(); // channel -> its card's elements
const history = {channels: {}, studio: {t: [], cpu_pct: [], gpu_pct: [], batch_mean: []}, answers: []};
const answerKeys = new Set();
let latest = null;
let colourOf = new Map();

const $ = (id) => document.getElementById(id);
const fmt = (value, digits = 0, unit = "") => (value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${unit}`);

function colour(name) {
  if (!colourOf.has(name)) colourOf.set(name, COLOURS[colourOf.size % COLOURS.length]);
  return colourOf.get(name);
}

async function api(method, path, body) {
  const init = {method, headers: {}};
  if (method !== "GET" && method !== "DELETE") {
    init.headers["Content-Type"] = "application/json"; // the public port takes state changes as JSON only
    init.body = JSON.stringify(body || {});
  }
  const res = await fetch(path, init);
  if (res.status === 401) { location.assign("/studio/login"); throw new Error("logged out"); }
  let data = {};
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

// ---------------------------------------------------------------------- cards
function makeCard(name) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.channel = name;
  const el = (selector) => node.querySelector(selector);
  const card = {
    node, name, thumb: el(".thumb"), title: el(".title"), state: el(".state"), fps: el(".fps"), late: el(".late"),
    viewers: el(".viewers"), avoffset: el(".avoffset"), worker: el(".worker"), outputs: el(".outputs"),
    queue: el(".queue ol"), queueCount: el(".queue-count"), answers: el(".answers ol"), pause: el(".pause"),
    skip: el(".skip"), off: el(".off"), say: el(".say"), sayText: el(".say-text"), error: el(".card-error"),
    thumbLoads: 0, alive: true,
  };
  const path = `/studio/api/channels/${encodeURIComponent(name)}`;
  const act = async (fn) => {
    card.error.textContent = "";
    try { await fn(); } catch (err) { card.error.textContent = err.message; }
  };
  card.pause.addEventListener("click", () => act(async () => {
    const paused = card.node.dataset.state === "paused";
    const summary = await api("POST", `${path}/${paused ? "resume" : "pause"}`);
    showState(card, summary.state, summary.paused);
  }));
  card.skip.addEventListener("click", () => act(async () => {
    const result = await api("POST", `${path}/skip`);
    card.error.textContent = result.stopped.length ? `skipped ${result.stopped.join(", ")}` : "nothing to skip";
  }));
  card.off.addEventListener("click", () => act(async () => {
    if (!confirm(`Take ${name} off air?`)) return;
    await api("DELETE", path);
    removeCard(name);
  }));
  card.say.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      await api("POST", `${path}/say`, {text: card.sayText.value});
      card.sayText.value = "";
    });
  });
  card.thumb.alt = `${name}, live`;
  card.thumb.addEventListener("load", () => { card.thumbLoads += 1; card.node.dataset.thumbLoads = card.thumbLoads; nextThumb(card); });
  card.thumb.addEventListener("error", () => nextThumb(card));
  loadThumb(card);
  $("cards").append(node);
  return card;
}

function loadThumb(card) {
  if (card.alive) card.thumb.src = `/studio/api/thumb/${encodeURIComponent(card.name)}?n=${Date.now()}`;
}

function nextThumb(card) {
  setTimeout(() => loadThumb(card), THUMB_EVERY_MS);
}

function removeCard(name) {
  const card = cards.get(name);
  if (!card) return;
  card.alive = false;
  card.node.remove();
  cards.delete(name);
}

function showState(card, state, why) {
  card.node.dataset.state = state;
  card.state.textContent = state === "paused" ? `paused${why ? ` (${why})` : ""}` : "on air";
  card.state.className = `state ${state}`;
  card.pause.textContent = state === "paused" ? "Resume" : "Pause";
}

function fill(list, items, render) {
  list.replaceChildren(...items.map((item) => { const li = document.createElement("li"); render(li, item); return li; }));
}

function updateCard(card, ch) {
  card.title.textContent = ch.title;
  showState(card, ch.state, ch.paused);
  card.fps.textContent = fmt(ch.fps, 1);
  card.late.textContent = `${ch.late_frames}${ch.lipsync_deadline_misses ? ` (+${ch.lipsync_deadline_misses} render)` : ""}`;
  card.viewers.textContent = ch.viewers;
  card.avoffset.textContent = ch.av_offset_ms === null || ch.av_offset_ms === undefined ? "not measured yet" : `${fmt(ch.av_offset_ms, 0)} ms`;
  card.worker.textContent = ch.worker ?? "–";
  fill(card.outputs, ch.outputs.length ? ch.outputs : [{kind: "outputs", target: "WebRTC page only", state: "–"}], (li, o) => {
    li.textContent = `${o.kind} ${o.target ? `→ ${o.target}` : ""}: ${o.state}${o.error ? ` (${o.error})` : ""}`;
    li.className = /live|recording|connected|ready/.test(o.state) ? "ok" : (o.error ? "bad" : "");
  });
  if (ch.chat_queue === null) {
    card.queueCount.textContent = "(no chat desk)";
    fill(card.queue, [], () => {});
  } else {
    card.queueCount.textContent = `(${ch.chat_waiting} waiting${ch.chat_paused ? ", paused" : ""})`;
    fill(card.queue, ch.chat_queue, (li, q) => { li.textContent = `${q.user}: ${q.text} — ${fmt(q.waited_s, 0)} s`; });
  }
  fill(card.answers, ch.answers, (li, a) => {
    const how = a.from === "speech_end" ? "voice→air" : `${a.source}→air`;
    li.textContent = `${a.question} — ${a.latency_ms} ms ${how}, ${a.state}`;
    li.title = a.heard ? `heard: ${a.heard}` : "";
  });
}

// ---------------------------------------------------------------------- strip
function updateStrip(strip) {
  $("strip-cpu").textContent = `${fmt(strip.cpu_pct, 0, " %")} of ${strip.cores} cores`;
  $("strip-gpu").textContent = strip.gpus
    ? strip.gpus.map((g) => `${g.name}: ${fmt(g.util_pct, 0, " %")}, ${fmt(g.mem_used_mb / 1024, 1)}/${fmt(g.mem_total_mb / 1024, 0)} GiB`).join("; ")
    : "no GPU found";
  const sizes = Object.keys(strip.batch_histogram);
  $("strip-batch").textContent = `${fmt(strip.batch_mean, 1)} frames/call now${sizes.length ? `, ${sizes[0]}–${sizes[sizes.length - 1]} seen` : ""}`;
  const cap = strip.capacity;
  const renderPart = cap.shared_renderer ? "" : `, render ${fmt(cap.render_used, 2)} of ${fmt(cap.render_limit, 2)}`;
  const left = cap.channels_left === null || cap.channels_left === undefined ? "" : `; room for ~${cap.channels_left} more`;
  $("strip-capacity").textContent = `CPU ${fmt(cap.cpu_used, 2)} of ${fmt(cap.cpu_limit, 2)} s/s${renderPart}${left}`;
  $("strip-ttft").textContent = strip.llm_backend === "none" ? "no LLM (llm.backend: none)"
    : !strip.llm_ready ? "loading…"
    : strip.ttft_samples ? `p50 ${fmt(strip.ttft_p50_ms, 0)} ms, p95 ${fmt(strip.ttft_p95_ms, 0)} ms (${strip.ttft_samples})` : "ready, no answer yet";
  $("strip-workers").textContent = strip.workers.map((w) => `#${w.index} ${w.state}${w.cores_used !== null && w.cores_used !== undefined ? ` ${fmt(w.cores_used, 2)} cores` : ""}`).join(", ");
}

function update(state) {
  latest = state;
  for (const [name, ch] of Object.entries(state.channels)) {
    const card = cards.get(name) || (cards.set(name, makeCard(name)), cards.get(name));
    updateCard(card, ch);
  }
  for (const name of [...cards.keys()]) if (!(name in state.channels)) removeCard(name);
  const failed = Object.entries(state.failed);
  $("failed").hidden = !failed.length;
  fill($("failed"), failed, (li, [name, why]) => { li.textContent = `${name} is off air: ${why}`; });
  updateStrip(state.strip);
  const select = $("latency-channel");
  const names = new Set([...Object.keys(state.channels), ...history.answers.map((a) => a.channel)]);
  for (const name of names) {
    if (![...select.options].some((o) => o.value === name)) select.append(new Option(name, name));
  }
}

// ---------------------------------------------------------------------- history and plots
function addPoint(point) {
  for (const [name, p] of Object.entries(point.channels)) {
    const s = history.channels[name] || (history.channels[name] = {t: [], fps: [], late: []});
    s.t.push(point.t); s.fps.push(p.fps); s.late.push(p.late);
  }
  const st = history.studio;
  st.t.push(point.t); st.cpu_pct.push(point.cpu_pct); st.gpu_pct.push(point.gpu_pct); st.batch_mean.push(point.batch_mean);
  trim(point.t - WINDOW_S);
}

function addAnswers(answers) {
  for (const a of answers) if (!answerKeys.has(a.key)) { answerKeys.add(a.key); history.answers.push(a); }
}

function trim(before) {
  const cut = (s) => { let i = 0; while (i < s.t.length && s.t[i] < before) i += 1; if (i) for (const k of Object.keys(s)) s[k].splice(0, i); };
  Object.values(history.channels).forEach(cut);
  cut(history.studio);
  while (history.answers.length && history.answers[0].t < before) answerKeys.delete(history.answers.shift().key);
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A frame of axes: x is minutes before now (the last hour), y from 0 to `top`; returns the mapping.
function axes(svg, top, unit, now) {
  const box = {left: 46, right: 590, top: 10, bottom: 180};
  svg.replaceChildren();
  const x = (t) => box.left + (box.right - box.left) * (1 - Math.min(WINDOW_S, Math.max(0, now - t)) / WINDOW_S);
  const y = (v) => box.bottom - (box.bottom - box.top) * Math.min(1, Math.max(0, v / top));
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    svg.append(el("line", {x1: box.left, x2: box.right, y1: y(v), y2: y(v), class: "grid"}));
    svg.append(el("text", {x: box.left - 4, y: y(v) + 4, class: "tick", "text-anchor": "end"}, `${+v.toFixed(v < 10 ? 1 : 0)}${i === 4 ? unit : ""}`));
  }
  for (const minutes of [60, 45, 30, 15, 0]) {
    const px = x(now - minutes * 60);
    svg.append(el("text", {x: px, y: 196, class: "tick", "text-anchor": "middle"}, minutes ? `-${minutes} min` : "now"));
  }
  return {x, y};
}

function niceTop(values, floor) {
  const max = Math.max(floor, ...values.filter((v) => v !== null && Number.isFinite(v)));
  const step = 10 ** Math.floor(Math.log10(max));
  return Math.ceil(max / step) * step;
}

function drawLines(svg, key, unit, floor) {
  const now = Date.now() / 1000;
  const series = Object.entries(history.channels);
  const top = niceTop(series.flatMap(([, s]) => s[key]), floor);
  const {x, y} = axes(svg, top, unit, now);
  series.forEach(([name, s], i) => {
    let d = "";
    s.t.forEach((t, j) => {
      const v = s[key][j];
      if (v === null) { d += " "; return; }
      d += `${d.endsWith(" ") || !d ? "M" : "L"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
    });
    svg.append(el("path", {d: d.trim(), class: "series", stroke: colour(name)}));
    svg.append(el("text", {x: 56 + i * 90, y: 22, class: "legend", fill: colour(name)}, name));
  });
}

function drawLatency() {
  const svg = $("plot-latency");
  const only = $("latency-channel").value;
  const answers = history.answers.filter((a) => !only || a.channel === only);
  const now = Date.now() / 1000;
  const top = niceTop(answers.map((a) => a.latency_ms), 1000);
  const {x, y} = axes(svg, top, " ms", now);
  for (const a of answers) {
    const point = a.from === "speech_end"
      ? el("circle", {cx: x(a.t), cy: y(a.latency_ms), r: 3.5, fill: colour(a.channel)})
      : el("rect", {x: x(a.t) - 3, y: y(a.latency_ms) - 3, width: 6, height: 6, fill: "none", stroke: colour(a.channel)});
    point.append(el("title", {}, `${a.channel}: ${a.latency_ms} ms (${a.from === "speech_end" ? "voice" : a.source} → on air)`));
    svg.append(point);
  }
  const voice = answers.filter((a) => a.from === "speech_end").map((a) => a.latency_ms).sort((p, q) => p - q);
  const p = (q) => voice[Math.min(voice.length - 1, Math.floor(q * voice.length))];
  $("latency-summary").textContent = voice.length
    ? `voice: p50 ${p(0.5)} ms, p95 ${p(0.95)} ms of ${voice.length}; ● voice, □ chat/say`
    : `${answers.length} answers, none by voice yet; ● voice, □ chat/say`;
}

function drawBatches() {
  const svg = $("plot-batch");
  svg.replaceChildren();
  const hist = latest ? latest.strip.batch_histogram : {};
  const sizes = Object.keys(hist).map(Number).sort((a, b) => a - b);
  if (!sizes.length) { svg.append(el("text", {x: 300, y: 100, class: "tick", "text-anchor": "middle"}, "no render calls yet")); return; }
  const top = niceTop(sizes.map((s) => hist[s]), 1);
  const width = Math.min(60, 540 / sizes.length);
  sizes.forEach((size, i) => {
    const h = 170 * (hist[size] / top);
    const left = 46 + i * width;
    svg.append(el("rect", {x: left + 2, y: 180 - h, width: width - 4, height: h, class: "bar"}));
    svg.append(el("text", {x: left + width / 2, y: 196, class: "tick", "text-anchor": "middle"}, size));
    svg.append(el("text", {x: left + width / 2, y: 176 - h, class: "tick", "text-anchor": "middle"}, hist[size]));
  });
}

function drawPlots() {
  drawLatency();
  drawLines($("plot-fps"), "fps", " fps", 30);
  drawLines($("plot-late"), "late", "/s", 1);
  drawBatches();
}

async function loadHistory() {
  const h = await api("GET", "/studio/api/history");
  history.channels = h.channels;
  history.studio = h.studio;
  history.answers = [];
  answerKeys.clear();
  addAnswers(h.answers);
}

// ---------------------------------------------------------------------- live
function connect() {
  const status = $("status");
  const events = new EventSource("/studio/api/events");
  let stale = true;
  events.onopen = async () => {
    status.textContent = "live";
    status.className = "status live";
    if (stale) { await loadHistory().catch(() => {}); stale = false; drawPlots(); }
  };
  events.onmessage = (message) => {
    const data = JSON.parse(message.data);
    addPoint(data.point);
    addAnswers(data.answers);
    update(data.state);
    drawPlots();
  };
  events.onerror = async () => {
    stale = true;
    status.textContent = "reconnecting…";
    status.className = "status bad";
    try { await api("GET", "/studio/api/state"); } catch (_) { /* 401 goes to the login form */ }
  };
}

$("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const shown = $("add-result");
  shown.textContent = "";
  let extra = {};
  try { extra = $("add-extra").value.trim() ? JSON.parse($("add-extra").value) : {}; } catch (err) {
    shown.textContent = `the extra keys are not JSON: ${err.message}`; return;
  }
  const size = Number($("add-size").value);
  const body = {
    ...extra, name: $("add-name").value.trim(), avatar: {pack: $("add-pack").value.trim(), ...(extra.avatar || {})},
    video: {width: size, height: size, fps: Number($("add-fps").value), ...(extra.video || {})},
  };
  if ($("add-title").value.trim()) body.title = $("add-title").value.trim();
  $("add-submit").disabled = true;
  shown.textContent = `preparing ${body.name}…`;
  try {
    await api("POST", "/studio/api/channels", body);
    shown.textContent = `${body.name} is on air`;
    $("add-name").value = "";
    update(await api("GET", "/studio/api/state"));
  } catch (err) {
    shown.textContent = err.message;
  } finally {
    $("add-submit").disabled = false;
  }
});

$("latency-channel").addEventListener("change", drawLatency);
$("logout").addEventListener("click", async () => { await api("POST", "/studio/logout").catch(() => {}); location.assign("/studio/login"); });

(async () => {
  try { update(await api("GET", "/studio/api/state")); } catch (_) { /* the live feed retries */ }
  await loadHistory().catch(() => {});
  drawPlots();
  connect();
})();
