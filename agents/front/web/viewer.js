// avatarcast viewer page: one channel's video and audio over WebRTC, a chat box that makes
// the avatar speak, a mic button, and a captions line fed by server-sent events.
// window.avatarcast exposes the connection state (tests and the stats line read it).
"use strict";

const channel = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = "/c/" + encodeURIComponent(channel);
const $ = (id) => document.getElementById(id);
const video = $("video");

const state = {
  channel, connection: "new", viewer: null, errors: [], captions: [],
  framesDecoded: 0, audioEnergy: 0, audioSamples: 0, videoCodec: null, mic: false,
};
const avatarcast = { state, pc: null, info: null };
window.avatarcast = avatarcast;

function setStatus(text, cls) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (cls || "");
}

function preferH264(transceiver) {
  // The server sends H.264 only (one encoder per channel for every viewer); list it first.
  const caps = RTCRtpReceiver.getCapabilities("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const h264 = caps.codecs.filter((c) => c.mimeType === "video/H264");
  transceiver.setCodecPreferences(h264.concat(caps.codecs.filter((c) => c.mimeType !== "video/H264")));
}

function gatheringDone(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function playWithSound() {
  video.muted = false;
  try {
    await video.play();
    $("unmute").hidden = true;
  } catch (err) {            // autoplay with sound needs a click first
    video.muted = true;
    $("unmute").hidden = false;
    video.play().catch(() => {});
  }
}

let retryMs = 1000;
const DISCONNECTED_MS = 2000;
async function connect() {
  setStatus("connecting…");
  const pc = new RTCPeerConnection({ iceServers: [] });
  avatarcast.pc = pc;
  const audio = pc.addTransceiver("audio", { direction: "sendrecv" });   // sendrecv: the mic can join later
  avatarcast.audioTransceiver = audio;
  preferH264(pc.addTransceiver("video", { direction: "recvonly" }));
  const remote = new MediaStream();
  pc.ontrack = (ev) => {
    remote.addTrack(ev.track);
    video.srcObject = remote;
    playWithSound();
    if (ev.track.kind === "audio") listenToOutput(ev.track);
  };
  let disconnectedTimer = null;
  pc.onconnectionstatechange = () => {
    state.connection = pc.connectionState;
    clearTimeout(disconnectedTimer);
    if (pc.connectionState === "connected") { setStatus("live", "live"); retryMs = 1000; }
    if (pc.connectionState === "failed" || pc.connectionState === "closed") reconnect(pc, "connection " + pc.connectionState);
    // the channel's worker restarted (or the network blinked): ICE says "disconnected" within seconds,
    // "failed" only after ~30 s; a picture gone for DISCONNECTED_MS is worth a new connection now
    if (pc.connectionState === "disconnected") {
      disconnectedTimer = setTimeout(() => reconnect(pc, "connection lost"), DISCONNECTED_MS);
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringDone(pc, 2000);
  const res = await fetch(base + "/offer", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await res.json();
  if (!res.ok) throw new Error(answer.error || ("offer refused: HTTP " + res.status));
  state.viewer = answer.viewer;
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  if (state.mic) await attachMic();
}

function reconnect(pc, why) {
  if (avatarcast.pc !== pc) return;           // already replaced
  avatarcast.pc = null;
  pc.close();
  state.errors.push(why);
  setStatus("reconnecting…", "bad");
  setTimeout(() => connect().catch(onFatal), retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

function onFatal(err) {
  state.errors.push(String(err));
  setStatus(String(err.message || err), "bad");
  setTimeout(() => connect().catch(onFatal), retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

// What the viewer hears, measured from the decoded audio itself (getStats' audio energy stops
// counting in Chromium once the page also captures a microphone): state.heardEnergy.
function listenToOutput(track) {
  try {
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    state.heardEnergy = 0;
    setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      state.heardEnergy += (sum / buf.length) * 0.05;     // ~ mean square x seconds
    }, 50);
  } catch (err) {
    state.errors.push("audio meter: " + err);
  }
}

// ---------------------------------------------------------------- mic
let micStream = null;
async function attachMic() {
  if (!micStream) {
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  }
  await avatarcast.audioTransceiver.sender.replaceTrack(micStream.getAudioTracks()[0]);
}

async function setMic(on) {
  try {
    if (on && !state.mic) {
      state.mic = true;
      await attachMic();
    } else if (!on && state.mic) {
      state.mic = false;
      await avatarcast.audioTransceiver.sender.replaceTrack(null);
      micStream.getTracks().forEach((t) => t.stop());
      micStream = null;
    }
    $("chat-error").textContent = "";
  } catch (err) {
    state.mic = false;
    $("chat-error").textContent = "Microphone unavailable: " + (err.message || err);
  }
  $("mic").setAttribute("aria-pressed", String(state.mic));
  $("mic").textContent = state.mic ? "Mic on" : "Mic off";
}

const toggleMic = () => setMic(!state.mic);

async function stopAvatar() {
  await fetch(base + "/interrupt", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
}

// ---------------------------------------------------------------- chat
async function sendChat(ev) {
  ev.preventDefault();
  const input = $("chat-text");
  const text = input.value.trim();
  if (!text) return;
  playWithSound();                             // sending is a click: sound may start now
  $("chat-send").disabled = true;
  try {
    const res = await fetch(base + "/chat", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, mode: $("chat-mode").value }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
    input.value = "";
    $("chat-error").textContent = "";
  } catch (err) {
    $("chat-error").textContent = err.message || String(err);
  } finally {
    $("chat-send").disabled = false;
  }
}

// ---------------------------------------------------------------- captions
function listenForEvents() {
  const source = new EventSource(base + "/events");
  // a 503 while the channel comes back on air ends an EventSource for good: open a new one
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setTimeout(listenForEvents, 2000);
  };
  source.onmessage = (ev) => {
    const event = JSON.parse(ev.data);
    if (event.type === "caption") {
      state.captions.push(event.text);
      $("captions").textContent = event.text;
    } else if (event.type === "caption_cut") {
      $("captions").textContent = event.text;
    } else if (event.type === "partial" || event.type === "transcript") {
      state[event.type === "partial" ? "partial" : "transcript"] = event.text;
      (state.transcripts = state.transcripts || []).push([event.type, event.text]);
      $("heard").textContent = event.text ? "You: " + event.text : "";
    } else if (event.type === "idle") {
      setTimeout(() => { if ($("captions").textContent === state.captions[state.captions.length - 1]) $("captions").textContent = ""; }, 1500);
    }
  };
}

// ---------------------------------------------------------------- stats
async function pollStats() {
  const pc = avatarcast.pc;
  if (pc) {
    const report = await pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s; });
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        state.framesDecoded = s.framesDecoded || 0;
        state.framesPerSecond = s.framesPerSecond || 0;
        state.videoCodec = codecs[s.codecId] ? codecs[s.codecId].mimeType : null;
      } else if (s.kind === "audio") {
        state.audioEnergy = s.totalAudioEnergy || 0;
        state.audioSamples = s.totalSamplesReceived || 0;
      }
    });
  }
  state.currentTime = video.currentTime;
  state.videoWidth = video.videoWidth;
  $("stats").textContent = state.connection === "connected"
    ? `${state.videoWidth}×${video.videoHeight} · ${Math.round(state.framesPerSecond || 0)} fps · ${state.videoCodec || ""}`
    : "";
}

// Mean luminance of a region of the current picture, sampled every intervalMs for durationMs.
// Used by the tests to see the mouth move; handy for checking a stream by hand too.
avatarcast.sampleRegion = function (box, durationMs, intervalMs) {
  const [x0, y0, x1, y1] = box;
  const canvas = document.createElement("canvas");
  canvas.width = x1 - x0; canvas.height = y1 - y0;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const samples = [];
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      g.drawImage(video, x0, y0, x1 - x0, y1 - y0, 0, 0, x1 - x0, y1 - y0);
      const d = g.getImageData(0, 0, x1 - x0, y1 - y0).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      samples.push(sum / (d.length / 4));
    }, intervalMs);
    setTimeout(() => { clearInterval(timer); resolve(samples); }, durationMs);
  });
};

async function main() {
  $("chat").addEventListener("submit", sendChat);
  $("mic").addEventListener("click", toggleMic);
  $("stop").addEventListener("click", stopAvatar);
  const talk = $("talk");
  talk.addEventListener("pointerdown", () => setMic(true));
  ["pointerup", "pointerleave"].forEach((e) => talk.addEventListener(e, () => { if (state.mic) setMic(false); }));
  $("unmute").addEventListener("click", playWithSound);
  const res = await fetch(base + "/info");
  const info = await res.json();
  if (!res.ok) { setStatus(info.error || "unknown channel", "bad"); return; }
  avatarcast.info = info;
  $("title").textContent = info.title;
  document.title = info.title + " — avatarcast";
  $("chat-text").maxLength = info.max_chat_chars;
  $("chat-mode").value = info.chat;
  $("chat-text").placeholder = info.chat === "say" ? "Type something for the avatar to say…" : "Ask the avatar something…";
  $("chat-mode").addEventListener("change", () => {
    $("chat-text").placeholder = $("chat-mode").value === "say" ? "Type something for the avatar to say…" : "Ask the avatar something…";
  });
  for (const id of ["mic", "talk"]) $(id).hidden = !info.listening;
  listenForEvents();
  setInterval(() => pollStats().catch(() => {}), 500);
  await connect();
}

main().catch(onFatal);
