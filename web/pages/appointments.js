// The appointments page, `/appointments?user=U` in dev mode (or `#token=...`): book a call as
// its host, see the appointments you take part in as host or guest, and take each step your
// side may (confirm, start, join, end, cancel); the notifications of your account, pushed
// live over the signaling socket and marked read when clicked. Joining opens the call page
// for the appointment's room.

import { Switchboard } from "/sdk/switchboard.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
let call = null;
let me = null;
let token = null;

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

async function ownToken() {
  if (fragment.get("token")) return fragment.get("token");
  const node = await (await fetch("/api/node")).json();
  const user = params.get("user");
  if (!node.devMode || !user) {
    throw new Error("open this page as /appointments#token=TOKEN (or, in dev mode, /appointments?user=NAME)");
  }
  const res = await fetch("/auth/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ userId: user }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.message ?? `token refused (${res.status})`);
  return body.token;
}

/** The user a token is for (its `sub`), read from the token itself. */
function subject(t) {
  const payload = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload)).sub;
}

/** The steps `me` may take on `a` now. */
function steps(a) {
  const host = a.hostId === me;
  const over = ["fulfilled", "cancelled", "noshow"].includes(a.status);
  if (over) return [];
  const out = [];
  if (a.status === "proposed" && a.createdBy !== me) out.push("confirm");
  if (host && !a.startedAt && a.online) out.push("start");
  if (a.startedAt && a.online) out.push("join", "end");
  out.push("cancel");
  return out;
}

function callUrl(a) {
  const q = new URLSearchParams({ room: a.roomId, appointment: a.id, name: me });
  if (!fragment.get("token")) q.set("user", me);
  return `/call?${q}${fragment.get("token") ? `#token=${encodeURIComponent(token)}` : ""}`;
}

async function refresh() {
  const list = await call.appointments();
  $("empty").hidden = list.length > 0;
  $("appointments").replaceChildren(
    ...list.map((a) => {
      const li = document.createElement("li");
      li.dataset.id = a.id;
      li.dataset.status = a.status;
      li.dataset.callStatus = a.callStatus;
      li.dataset.role = a.hostId === me ? "host" : "guest";
      const who = a.hostId === me ? `with ${a.guestIds.join(", ")}` : `with ${a.hostId}`;
      const when = new Date(a.start).toLocaleString();
      const text = document.createElement("span");
      text.textContent = `${when} ${who}${a.description ? ` (${a.description})` : ""}: ${a.status}, call ${a.callStatus.replace("_", " ")} `;
      li.append(text);
      for (const step of steps(a)) {
        const b = document.createElement("button");
        b.dataset.action = step;
        b.textContent = step[0].toUpperCase() + step.slice(1);
        b.addEventListener("click", () => act(a, step));
        li.append(b);
      }
      return li;
    }),
  );
}

async function act(a, step) {
  if (step === "join") {
    location.href = callUrl(a);
    return;
  }
  try {
    await call.appointmentStep(a.id, step);
    notice(null);
  } catch (e) {
    notice(`${e.code ?? "error"}: ${e.message}`);
  }
  await refresh();
}

async function showNotifications() {
  const { notifications, unread } = await call.notifications();
  $("unread").dataset.count = String(unread);
  $("unread").textContent = `${unread} unread`;
  $("notifications").replaceChildren(
    ...notifications.map((n) => {
      const li = document.createElement("li");
      li.dataset.id = n.id;
      li.dataset.kind = n.kind;
      li.dataset.read = String(n.readAt !== null);
      li.textContent = `${new Date(n.createdAt).toLocaleTimeString()} ${n.title}`;
      li.addEventListener("click", async () => {
        await call.readNotification(n.id);
        await showNotifications();
      });
      return li;
    }),
  );
}

async function start() {
  try {
    token = await ownToken();
    me = subject(token);
    $("who").textContent = me;
    call = await Switchboard.connect({ url: location.origin, token });
    window.switchboardCall = call;
    call.on("notification", async () => {
      await Promise.all([showNotifications(), refresh()]);
    });
    call.on("reconnected", () => Promise.all([showNotifications(), refresh()]));
    const now = new Date(Date.now() - new Date().getTimezoneOffset() * 60_000);
    $("book-start").value = now.toISOString().slice(0, 16);
    await Promise.all([showNotifications(), refresh()]);
    document.body.dataset.state = "ready";
  } catch (e) {
    document.body.dataset.state = "failed";
    notice(e.message);
  }
}

$("book-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const guestIds = $("book-guests").value.split(",").map((g) => g.trim()).filter(Boolean);
  const description = $("book-description").value.trim() || undefined;
  try {
    await call.book({ hostId: me, guestIds, start: new Date($("book-start").value), online: true, description });
    notice(null);
    $("book-form").reset();
  } catch (e) {
    notice(`${e.code ?? "error"}: ${e.message}`);
  }
  await refresh();
});

start();
