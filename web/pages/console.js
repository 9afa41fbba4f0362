// The operator console, `/console`: the cluster's members and their health, rooms per node
// and the room → node map, connections, message and error rates, join and relay latency,
// failovers and room moves over time, the snapshot queue and recent events. Live: the node
// sends an overview every two seconds (`/api/console/stream`, server-sent events); rates are
// the difference between two overviews. Outside dev mode it needs an admin token, from the URL
// fragment (`#token=...`) or the form.

const $ = (id) => document.getElementById(id);
const HISTORY = 150;

let previous = null;
const history = [];
let source = null;
let lastOverview = null;

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

function token() {
  return new URLSearchParams(location.hash.slice(1)).get("token") ?? sessionStorage.getItem("switchboard-admin-token");
}

async function start() {
  const node = await (await fetch("/api/node")).json();
  $("node").textContent = `${node.nodeId} · v${node.version}${node.devMode ? " · dev mode" : ""}`;
  const t = token();
  if (!node.devMode && !t) {
    $("token-form").hidden = false;
    return;
  }
  // One plain request first, so a refused token is reported with its reason.
  const res = await fetch("/api/console/overview", { headers: t ? { authorization: `Bearer ${t}` } : {} });
  const body = await res.json();
  if (!res.ok) {
    sessionStorage.removeItem("switchboard-admin-token");
    notice(`The console was refused: ${body.code}: ${body.message}`);
    $("token-form").hidden = false;
    return;
  }
  $("token-form").hidden = true;
  $("console").hidden = false;
  show(body);
  listen(t);
}

function listen(t) {
  source?.close();
  source = new EventSource(`/api/console/stream${t ? `?token=${encodeURIComponent(t)}` : ""}`);
  source.addEventListener("overview", (ev) => {
    setLive(true);
    show(JSON.parse(ev.data));
  });
  source.addEventListener("error", () => setLive(false));
}

function setLive(live) {
  const el = $("live");
  el.dataset.live = String(live);
  el.textContent = live ? "live" : "reconnecting";
  document.body.dataset.state = live ? "live" : "reconnecting";
}

function rate(now, before, key) {
  if (!before) return null;
  const dt = (now.at - before.at) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, (now.totals[key] - before.totals[key]) / dt);
}

function fmt(v, unit = "") {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v;
  const n = Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 10) / 10;
  return `${n.toLocaleString()}${unit}`;
}

function show(o) {
  lastOverview = o;
  const msgRate = rate(o, previous, "messages");
  const errRate = rate(o, previous, "errors");
  if (previous) {
    history.push({
      failovers: Math.max(0, o.totals.failovers - previous.totals.failovers),
      moves: Math.max(0, o.totals.roomMoves - previous.totals.roomMoves),
    });
    if (history.length > HISTORY) history.shift();
  }
  previous = o;
  $("updated").textContent = `updated ${new Date(o.at).toLocaleTimeString()}`;
  const cards = [
    ["members", o.members.length],
    ["rooms (cluster)", o.roomsTotal],
    ["connections here", o.here.connections],
    ["participants here", o.here.participants],
    ["messages/s here", fmt(msgRate)],
    ["errors/s here", fmt(errRate)],
    ["join p50 / p99", `${fmt(o.latency.joinP50Ms)} / ${fmt(o.latency.joinP99Ms)} ms`],
    ["relay p50 / p99", `${fmt(o.latency.relayP50Ms)} / ${fmt(o.latency.relayP99Ms)} ms`],
    ["failovers", o.totals.failovers],
    ["room moves", o.totals.roomMoves],
    ["snapshot queue", `${o.snapshots.queued} queued, ${o.snapshots.dispatched + o.snapshots.scored} running`],
    ["resumes", o.totals.resumes],
  ];
  $("cards").replaceChildren(
    ...cards.map(([label, value]) => {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.card = label;
      card.innerHTML = `<div class="figure"></div><div class="label"></div>`;
      card.querySelector(".figure").textContent = typeof value === "number" ? value.toLocaleString() : value;
      card.querySelector(".label").textContent = label;
      return card;
    }),
  );
  rows(
    "members",
    o.members.map((m) => ({
      cells: [
        m.nodeId + (m.isSelf ? " (this node)" : ""),
        m.state,
        m.httpAddr ?? "",
        fmt(m.rooms),
        fmt(m.connections),
        m.rttMs === null || m.rttMs === undefined ? "—" : `${fmt(m.rttMs)} ms`,
        m.lastHeartbeat ? new Date(m.lastHeartbeat).toLocaleTimeString() : "—",
      ],
      data: { node: m.nodeId, health: m.state },
    })),
  );
  rows(
    "rooms-per-node",
    Object.entries(o.roomsPerNode).map(([node, n]) => ({ cells: [node, String(n)], data: { node } })),
  );
  showRooms();
  rows(
    "events",
    o.events.map((e) => ({ cells: [new Date(e.at).toLocaleTimeString(), e.kind, e.roomId], data: { kind: e.kind } })),
  );
  drawMoves();
}

function showRooms() {
  if (!lastOverview) return;
  const filter = $("room-filter").value.trim();
  const rooms = lastOverview.rooms.filter((r) => !filter || r.roomId.includes(filter)).slice(0, 200);
  rows("rooms", rooms.map((r) => ({ cells: [r.roomId, r.nodeId], data: { room: r.roomId, node: r.nodeId } })));
}

function rows(table, items) {
  const body = $(table).querySelector("tbody");
  body.replaceChildren(
    ...items.map(({ cells, data }) => {
      const tr = document.createElement("tr");
      Object.assign(tr.dataset, data);
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    }),
  );
}

function drawMoves() {
  const canvas = $("moves");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...history.map((h) => Math.max(h.failovers, h.moves)));
  const w = canvas.width / HISTORY;
  history.forEach((h, i) => {
    const x = i * w;
    for (const [value, color, offset] of [
      [h.failovers, "#ff3b30", 0],
      [h.moves, "#0a84ff", w / 2],
    ]) {
      const height = (value / max) * (canvas.height - 10);
      ctx.fillStyle = color;
      ctx.fillRect(x + offset, canvas.height - height, Math.max(1, w / 2 - 1), height);
    }
  });
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = new FormData(ev.currentTarget).get("token");
  sessionStorage.setItem("switchboard-admin-token", t);
  notice(null);
  start();
});
$("room-filter").addEventListener("input", showRooms);

start().catch((e) => notice(`The console could not start: ${e.message}`));
