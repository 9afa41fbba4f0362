// The call page, `/call?room=R[&name=N][&relay=1][&node=URL...]` (or `?lobby=L[&tags=a,b]` to be
// paired with someone waiting in a lobby): camera and microphone, the other participants'
// videos, mute, camera and screen-share toggles, chat, an overlay pointer, snapshots with
// their reports, a quality indicator and a reconnecting banner. In dev mode it mints its own
// token; otherwise the token comes in the URL fragment (`#token=...`, never sent to a server
// in a request line or a Referer).
//
// `&appointment=ID` (from the appointments page): the End call button ends the appointment, and
// notifications (the host ended it, say) are shown. `&user=U` in dev mode: the token is for U.
//
// `window.switchboardCall` holds the call, for the browser's console.

import { Switchboard } from "/sdk/switchboard.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const base = location.origin;

let call = null;
/** The user a dev-mode page mints its tokens for (the same one when a token is refreshed). */
let devUser = null;
let sharing = false;
/** The latest overlay of each peer, drawn over our own video (they point at us). */
const overlays = new Map();
/** Our own pointer, drawn over the video we point at. */
let ownPointer = null;
let lastPointerSent = 0;
let pendingJob = null;

function setState(state) {
  document.body.dataset.state = state;
}

function notice(text) {
  const el = $("notice");
  el.textContent = text ?? "";
  el.hidden = !text;
}

function banner(text) {
  const el = $("banner");
  el.textContent = text ?? "";
  el.hidden = !text;
}

async function token(room, name) {
  if (fragment.get("token")) return fragment.get("token");
  const node = await (await fetch("/api/node")).json();
  if (!node.devMode) {
    throw new Error("this page needs a token: open it as /call?room=ROOM#token=TOKEN (from your application)");
  }
  // `user=U` (dev mode): act as that user (an appointment's host or guest, say).
  const asUser = params.get("user");
  devUser ??= asUser ? asUser : name ? `${name.replace(/[^A-Za-z0-9._-]/g, "").slice(0, 48) || "guest"}-${rand()}` : `guest-${rand()}`;
  const res = await fetch("/auth/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: devUser, roomId: room, displayName: name || undefined }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.message ?? `token refused (${res.status})`);
  return body.token;
}

function rand() {
  return Math.random().toString(16).slice(2, 8);
}

async function start() {
  const room = params.get("room");
  // `lobby=L[&tags=a,b]`: wait in a lobby instead, and call whoever it pairs us with.
  const lobby = params.get("lobby");
  if (!room && !lobby) {
    setState("choosing");
    $("join-form").hidden = false;
    return;
  }
  const name = params.get("name") ?? "";
  const displayName = name || undefined;
  const title = lobby ? `lobby ${lobby}` : room;
  $("room-name").textContent = title;
  document.title = `${lobby ?? room} · Switchboard`;
  setState(lobby ? "waiting" : "connecting");
  notice(null);
  $("retry-box").hidden = true;
  try {
    // In a lobby the token is for any room: the lobby picks the room.
    const t = await token(lobby ? null : room, name);
    // `relay=1` sends all media through TURN (to check a TURN server, or to hide addresses).
    const iceTransportPolicy = params.get("relay") === "1" ? "relay" : "all";
    // `node=<base URL>` (repeatable): other nodes of the cluster to reconnect to when this
    // one is gone.
    const urls = [base, ...params.getAll("node")];
    // A fragment's token cannot be refreshed here; a dev-mode page mints a fresh one from the
    // node that served it, and keeps the one it has while that node is gone (a reconnect to
    // another node must not wait for it).
    let current = t;
    const getToken = fragment.get("token")
      ? undefined
      : () =>
          token(lobby ? null : room, name).then(
            (fresh) => (current = fresh),
            () => current,
          );
    call = await Switchboard.connect({ url: urls, token: t, iceTransportPolicy, getToken });
    window.switchboardCall = call;
    wire(call);
    if (lobby) {
      const tags = (params.get("tags") ?? "").split(",").map((t) => t.trim()).filter(Boolean);
      call.on("lobby_waiting", ({ ahead }) => {
        notice(ahead > 0 ? `Waiting for someone to talk to (${ahead} ahead of you)…` : "Waiting for someone to talk to…");
      });
      call.on("paired", ({ roomId }) => {
        notice(null);
        $("room-name").textContent = roomId;
      });
      await call.lobby(lobby, { audio: true, video: true, displayName, tags });
    } else {
      await call.join(room, { audio: true, video: true, displayName });
    }
    $("call").hidden = false;
    showLocal();
    setState("joined");
  } catch (e) {
    call?.close();
    call = null;
    setState("failed");
    const why = `${e.code ? `${e.code}: ` : ""}${e.message}`;
    if (e.code === "lobby_timeout") notice("Nobody came along this time.");
    else notice(lobby ? `Could not wait in the lobby: ${why}` : `Could not join: ${why}`);
    $("retry-box").hidden = false;
  }
}

function showLocal() {
  const video = $("local").querySelector("video");
  video.srcObject = call.localStream;
  const hasVideo = (call.localStream?.getVideoTracks().length ?? 0) > 0;
  const hasAudio = (call.localStream?.getAudioTracks().length ?? 0) > 0;
  $("local").dataset.video = hasVideo ? "on" : "none";
  $("video").disabled = !hasVideo;
  $("mute").disabled = !hasAudio;
  flags($("local"), { audioMuted: !hasAudio, videoOff: !hasVideo });
}

function wire(c) {
  c.on("joined", (j) => {
    setCallStatus(j.callStatus);
    for (const p of j.participants) if (p.peerId !== j.peerId) tile(p.peerId, p);
    for (const o of j.overlays ?? []) overlays.set(o.peerId, o.overlay);
    drawOverlays();
    for (const m of j.chat ?? []) chatLine(m);
  });
  c.on("peer_joined", ({ peerId, participant }) => {
    // Someone whose connection dropped and who came back as a new session: the old tile,
    // waiting for a resume that will not come, goes.
    for (const t of document.querySelectorAll('.tile.remote[data-away="true"]')) {
      if (t.dataset.user === participant.userId) t.remove();
    }
    tile(peerId, participant);
    notice(null);
  });
  c.on("peer_left", ({ peerId, participant, reason }) => {
    document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`)?.remove();
    overlays.delete(peerId);
    drawOverlays();
    const who = participant?.displayName ?? "A participant";
    notice(reason === "left" ? `${who} left the call.` : `${who} is gone (${reason}).`);
  });
  c.on("peer_disconnected", ({ peerId }) => {
    const t = document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
    if (t) t.dataset.away = "true";
  });
  c.on("peer_resumed", ({ peerId }) => {
    const t = document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
    if (t) delete t.dataset.away;
  });
  c.on("peer_connection", ({ peerId, state }) => {
    const t = document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
    if (t) t.dataset.connection = state;
  });
  c.on("track", ({ peerId, stream }) => {
    const t = tile(peerId, c.participants.get(peerId));
    const video = t.querySelector("video");
    if (video.srcObject !== stream) video.srcObject = stream;
  });
  c.on("control", ({ peerId, media }) => {
    const t = peerId === c.peerId ? $("local") : document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
    if (t) flags(t, media);
  });
  c.on("video_paused", ({ peerId, paused }) => {
    const t = document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
    if (t) t.dataset.videoPaused = String(paused);
  });
  c.on("overlay", ({ peerId, overlay }) => {
    if (overlay.kind === "clear") overlays.delete(peerId);
    else overlays.set(peerId, overlay);
    drawOverlays();
  });
  c.on("chat", chatLine);
  c.on("call_status", ({ status }) => setCallStatus(status));
  c.on("quality", ({ peerId, level, score }) => {
    if (peerId !== c.peerId) return;
    const q = $("quality");
    q.dataset.level = level;
    q.textContent = `quality ${level} (${Math.round(score)})`;
  });
  c.on("fallback", ({ mode }) => {
    notice(mode === "audio_only" ? "Your connection is poor: video paused, audio continues." : null);
  });
  c.on("media_error", ({ error, using }) => {
    const why = error?.name === "NotAllowedError" ? "permission was denied" : (error?.message ?? "unavailable");
    notice(
      using === "none"
        ? `Camera and microphone: ${why}. You joined receive-only: you can see and hear the others.`
        : `Camera: ${why}. You joined with audio only.`,
    );
  });
  c.on("reconnecting", () => {
    setState("reconnecting");
    banner("Connection lost. Reconnecting…");
  });
  c.on("reconnected", ({ resumed }) => {
    document.body.dataset.reconnect = resumed ? "resumed" : "rejoined";
    setState("joined");
    banner(null);
    if (!resumed) {
      // A new session: the old tiles belong to sessions that are gone.
      for (const t of document.querySelectorAll(".tile.remote")) t.remove();
      overlays.clear();
      drawOverlays();
      for (const p of c.participants.values()) if (p.peerId !== c.peerId) tile(p.peerId, p);
    }
  });
  c.on("closed", ({ reason }) => {
    if (document.body.dataset.state === "left") return;
    setState("failed");
    banner(null);
    notice(`The connection closed: ${reason}.`);
    $("retry-box").hidden = false;
  });
  c.on("snapshot_ready", showReport);
  c.on("notification", (n) => notice(n.title));
  c.on("removed", ({ reason }) => {
    setState("removed");
    notice(reason === "room_closed" ? "The room was closed." : "An operator removed you from the call.");
  });
  c.on("muted_by_admin", ({ audio, video }) => {
    if (audio) $("mute").setAttribute("aria-pressed", "true");
    if (video) $("video").setAttribute("aria-pressed", "true");
    notice(`An operator turned off your ${[audio && "microphone", video && "camera"].filter(Boolean).join(" and ")}.`);
  });
  c.on("error", (e) => {
    if (e?.code) notice(`${e.code}: ${e.message}`);
  });
}

function setCallStatus(status) {
  const el = $("call-status");
  el.dataset.status = status;
  el.textContent = `call ${status.replace("_", " ")}`;
}

/** The tile of a remote peer, made on first use. */
function tile(peerId, participant) {
  let t = document.querySelector(`.tile[data-peer="${CSS.escape(peerId)}"]`);
  if (!t) {
    t = document.createElement("figure");
    t.className = "tile remote";
    t.dataset.peer = peerId;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const canvas = document.createElement("canvas");
    canvas.className = "overlay";
    const caption = document.createElement("figcaption");
    caption.innerHTML = `<span class="name"></span> <span class="flags"></span>`;
    t.append(video, canvas, caption);
    $("stage").append(t);
    // Pointing at someone's video shows them the pointer over their own camera.
    video.addEventListener("pointermove", (ev) => pointAt(t, ev));
    video.addEventListener("pointerleave", () => clearPointer());
  }
  if (participant) {
    t.dataset.user = participant.userId;
    t.querySelector(".name").textContent = participant.displayName ?? participant.userId;
    if (participant.media) flags(t, participant.media);
  }
  return t;
}

function flags(t, media) {
  t.dataset.audioMuted = String(!!media.audioMuted);
  t.dataset.videoOff = String(!!media.videoOff);
  const words = [];
  if (media.audioMuted) words.push("muted");
  if (media.videoOff) words.push("camera off");
  if (media.screenSharing) words.push("sharing screen");
  if (media.videoPaused) words.push("video paused");
  t.querySelector(".flags").textContent = words.join(", ");
}

function pointAt(t, ev) {
  const rect = ev.target.getBoundingClientRect();
  const x = clamp((ev.clientX - rect.left) / rect.width);
  const y = clamp((ev.clientY - rect.top) / rect.height);
  ownPointer = { tile: t, x, y };
  drawOverlays();
  const now = performance.now();
  if (now - lastPointerSent < 50) return;
  lastPointerSent = now;
  call?.sendOverlay({ kind: "pointer", x, y, color: "#ff3b30" }).catch(() => {});
}

function clearPointer() {
  ownPointer = null;
  drawOverlays();
  call?.sendOverlay({ kind: "clear" }).catch(() => {});
}

function clamp(v) {
  return Math.min(1, Math.max(0, v));
}

/** Pointers and measures: the others' over our own video, ours over the tile we point at. */
function drawOverlays() {
  for (const t of document.querySelectorAll(".tile")) {
    const canvas = t.querySelector("canvas.overlay");
    const ctx = canvas.getContext("2d");
    canvas.width = canvas.clientWidth;
    canvas.height = canvas.clientHeight;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const marks = [];
    if (t.id === "local") for (const [peerId, o] of overlays) marks.push({ ...o, who: peerId });
    if (ownPointer?.tile === t) marks.push({ kind: "pointer", x: ownPointer.x, y: ownPointer.y, color: "#0a84ff" });
    t.dataset.pointers = String(marks.length);
    for (const m of marks) drawMark(ctx, canvas, m);
  }
}

function drawMark(ctx, canvas, m) {
  ctx.strokeStyle = ctx.fillStyle = m.color ?? "#ff3b30";
  ctx.lineWidth = 3;
  if (m.kind === "pointer") {
    ctx.beginPath();
    ctx.arc(m.x * canvas.width, m.y * canvas.height, 8, 0, Math.PI * 2);
    ctx.fill();
  } else if (m.kind === "measure" && m.points?.length) {
    ctx.beginPath();
    m.points.forEach((p, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, p.x * canvas.width, p.y * canvas.height));
    ctx.stroke();
    if (m.label) ctx.fillText(m.label, m.points[0].x * canvas.width + 6, m.points[0].y * canvas.height - 6);
  }
}

function chatLine(m) {
  if (document.querySelector(`#chat-log li[data-id="${CSS.escape(m.id)}"]`)) return;
  const li = document.createElement("li");
  li.dataset.id = m.id;
  li.dataset.mine = String(m.peerId === call?.peerId);
  const who = document.createElement("strong");
  who.textContent = `${m.displayName}: `;
  li.append(who, document.createTextNode(m.text));
  $("chat-log").append(li);
  li.scrollIntoView({ block: "nearest" });
}

async function showReport(ready) {
  if (pendingJob && ready.jobId !== pendingJob) return;
  const box = $("report");
  box.hidden = false;
  box.dataset.verdict = ready.verdict;
  $("report-state").textContent = `Report ready: ${ready.verdict} (score ${ready.score.toFixed(3)})`;
  try {
    const r = await call.report(ready.reportId);
    const facts = $("report-facts");
    facts.replaceChildren();
    for (const [k, v] of [
      ["Subject", r.subject],
      ["Verdict", r.verdict],
      ["Regions", String(r.regions.length)],
      ["Signed by", r.keyId],
      ["Report", r.reportId],
    ]) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      facts.append(dt, dd);
    }
    if (r.heatmapCid) {
      const img = $("report-heatmap");
      img.src = URL.createObjectURL(await call.evidence(r.heatmapCid));
      img.hidden = false;
    }
    box.dataset.loaded = "true";
  } catch (e) {
    $("report-state").textContent += ` (the report could not be read: ${e.message})`;
  }
}

function bindControls() {
  $("mute").addEventListener("click", async (ev) => {
    const muted = ev.currentTarget.getAttribute("aria-pressed") !== "true";
    ev.currentTarget.setAttribute("aria-pressed", String(muted));
    ev.currentTarget.textContent = muted ? "Unmute" : "Mute";
    await call?.mute(muted).catch((e) => notice(e.message));
  });
  $("video").addEventListener("click", async (ev) => {
    const off = ev.currentTarget.getAttribute("aria-pressed") !== "true";
    ev.currentTarget.setAttribute("aria-pressed", String(off));
    ev.currentTarget.textContent = off ? "Camera on" : "Camera off";
    await call?.setVideo(!off).catch((e) => notice(e.message));
  });
  $("share").addEventListener("click", async (ev) => {
    try {
      await call?.shareScreen(!sharing);
      sharing = !sharing;
      ev.currentTarget.setAttribute("aria-pressed", String(sharing));
      ev.currentTarget.textContent = sharing ? "Stop sharing" : "Share screen";
    } catch (e) {
      notice(`Screen sharing: ${e.message}`);
    }
  });
  $("snapshot").addEventListener("click", async () => {
    if (!call) return;
    const remote = [...call.links.values()].find((l) => l.remoteStream?.getVideoTracks().length);
    const target = remote?.peerId ?? call.peerId;
    $("report").hidden = false;
    delete $("report").dataset.loaded;
    $("report-state").textContent = "Snapshot taken, waiting for its report…";
    try {
      const job = await call.snapshot(target);
      pendingJob = job.jobId;
    } catch (e) {
      $("report-state").textContent = `Snapshot failed: ${e.code ?? ""} ${e.message}`;
    }
  });
  $("leave").addEventListener("click", () => {
    setState("left");
    call?.close();
    $("call").hidden = true;
    notice("You left the call.");
    $("retry-box").hidden = false;
  });
  // In an appointment (`appointment=ID`), ending the call ends the appointment.
  const appointment = params.get("appointment");
  $("end").addEventListener("click", () => {
    const ending = appointment ? call?.appointmentStep(appointment, "end") : call?.end();
    ending?.catch((e) => notice(e.message));
  });
  $("chat-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || !call) return;
    input.value = "";
    await call.sendChat(text).catch((e) => notice(`Chat: ${e.message}`));
  });
  $("retry").addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tile.remote")) t.remove();
    $("chat-log").replaceChildren();
    start();
  });
  $("join-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.currentTarget);
    const q = new URLSearchParams({ room: form.get("room"), name: form.get("name") ?? "" });
    location.search = q.toString();
  });
  window.addEventListener("resize", drawOverlays);
}

bindControls();
start();
