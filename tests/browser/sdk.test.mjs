// Unit tests of the browser SDK's logic in Node, without a browser: perfect negotiation
// between two links over fake peer connections (glare settles, no loop), and the call's
// requests, reconnect and resume over a fake WebSocket.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Call, PeerLink, backoffDelay, signalingUrl, summarizeStats } from "../../web/sdk/switchboard.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** The signaling states of an RTCPeerConnection, with the implicit rollback of a crossing offer. */
class FakePeerConnection {
  constructor(name) {
    this.name = name;
    this.signalingState = "stable";
    this.localDescription = null;
    this.remoteDescription = null;
    this.rollbacks = 0;
    this.candidates = [];
    this.n = 0;
  }
  async setLocalDescription() {
    await tick();
    if (this.signalingState === "have-remote-offer") {
      this.localDescription = { type: "answer", sdp: `answer-${this.name}-${++this.n}` };
      this.signalingState = "stable";
    } else if (this.signalingState === "stable") {
      this.localDescription = { type: "offer", sdp: `offer-${this.name}-${++this.n}` };
      this.signalingState = "have-local-offer";
    }
  }
  async setRemoteDescription({ type, sdp }) {
    await tick();
    if (type === "offer") {
      if (this.signalingState === "have-local-offer") this.rollbacks += 1;
      else if (this.signalingState !== "stable") throw new Error(`offer in ${this.signalingState}`);
      this.signalingState = "have-remote-offer";
    } else {
      if (this.signalingState !== "have-local-offer") throw new Error(`answer in ${this.signalingState}`);
      this.signalingState = "stable";
    }
    this.remoteDescription = { type, sdp };
  }
  async addIceCandidate(c) {
    await tick();
    if (!this.remoteDescription) throw new Error("candidate before any remote description");
    this.candidates.push(c);
  }
  restartIce() {
    setTimeout(() => this.onnegotiationneeded?.(), 0);
  }
  close() {}
}

/** Two links wired to each other through an asynchronous, ordered channel. */
function pair(idA, idB) {
  const sent = [];
  const errors = [];
  const ignored = [];
  const links = {};
  const deliver = (to) => (msg) => {
    sent.push({ to, ...msg });
    setTimeout(async () => {
      const link = links[to];
      if (msg.type === "ice-candidate") link.handleCandidate(msg.candidate);
      else if ((await link.handleDescription(msg.type, msg.sdp)) === "ignored") ignored.push(`${to}:${msg.sdp}`);
    }, 1);
  };
  links.a = new PeerLink({ selfId: idA, peerId: idB, pc: new FakePeerConnection("a"), signal: deliver("b"), onError: (e) => errors.push(e) });
  links.b = new PeerLink({ selfId: idB, peerId: idA, pc: new FakePeerConnection("b"), signal: deliver("a"), onError: (e) => errors.push(e) });
  return { ...links, sent, errors, ignored };
}

async function settle(p) {
  // Bounded: a negotiation that loops would never leave both sides stable and quiet.
  for (let i = 0; i < 200; i++) {
    const before = p.sent.length;
    await new Promise((r) => setTimeout(r, 5));
    if (p.a.pc.signalingState === "stable" && p.b.pc.signalingState === "stable" && p.sent.length === before) return;
  }
  throw new Error(`did not settle: ${p.a.pc.signalingState}/${p.b.pc.signalingState}, ${p.sent.length} messages`);
}

test("the smaller peer id is the polite side, on both ends", () => {
  const p = pair("1111", "ffff");
  assert.equal(p.a.polite, true);
  assert.equal(p.b.polite, false);
});

test("one side offering negotiates once", async () => {
  const p = pair("1111", "ffff");
  p.a.pc.onnegotiationneeded();
  await settle(p);
  assert.deepEqual(p.sent.map((m) => `${m.to}:${m.type}`), ["b:offer", "a:answer"]);
  assert.deepEqual(p.errors, []);
});

test("offers that cross (glare) settle with the impolite side's offer, without a loop", async () => {
  const p = pair("1111", "ffff");
  // Both sides add tracks at the same moment.
  p.a.pc.onnegotiationneeded();
  p.b.pc.onnegotiationneeded();
  await settle(p);
  assert.deepEqual(p.errors, []);
  // The polite side (a) rolled its offer back and answered the impolite one's.
  assert.equal(p.a.pc.rollbacks, 1);
  assert.equal(p.b.pc.rollbacks, 0);
  assert.deepEqual(p.ignored, ["b:offer-a-1"]);
  assert.equal(p.a.pc.remoteDescription.sdp, "offer-b-1");
  assert.equal(p.b.pc.remoteDescription.type, "answer");
  const types = p.sent.map((m) => `${m.to}:${m.type}`);
  assert.deepEqual(types.sort(), ["a:offer", "b:answer", "b:offer"]);
  // The polite side's needs are met by the next negotiation, which goes through cleanly.
  p.a.pc.onnegotiationneeded();
  await settle(p);
  assert.deepEqual(p.errors, []);
  assert.equal(p.b.pc.remoteDescription.type, "offer");
  assert.equal(p.b.pc.remoteDescription.sdp, p.a.pc.localDescription.sdp);
});

test("candidates that came with an ignored offer are kept and added once a description is applied", async () => {
  const p = pair("1111", "ffff");
  p.a.pc.onnegotiationneeded();
  p.b.pc.onnegotiationneeded();
  await tick();
  await tick();
  // A candidate from the polite side's (ignored) offer reaches the impolite side.
  await p.b.handleCandidate({ candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host" });
  assert.equal(p.b.pc.candidates.length, 0);
  await settle(p);
  assert.deepEqual(p.errors, []);
  // The polite side may answer with the credentials of the offer it rolled back, and never
  // send those candidates again: the impolite side adds them with the answer.
  assert.deepEqual(p.b.pc.candidates.map((c) => c.candidate), ["candidate:1 1 udp 1 127.0.0.1 9 typ host"]);
  await p.a.handleCandidate({ candidate: "candidate:2 1 udp 1 127.0.0.1 10 typ host" });
  assert.equal(p.a.pc.candidates.length, 1);
});

test("an ICE restart is an ordinary negotiation", async () => {
  const p = pair("1111", "ffff");
  p.a.pc.onnegotiationneeded();
  await settle(p);
  const before = p.sent.length;
  p.b.restartIce();
  await settle(p);
  assert.deepEqual(p.sent.slice(before).map((m) => `${m.to}:${m.type}`), ["a:offer", "b:answer"]);
  assert.equal(p.a.pc.remoteDescription.sdp, "offer-b-2");
  assert.deepEqual(p.errors, []);
});

test("signaling URLs and the reconnect backoff", () => {
  assert.equal(signalingUrl("http://127.0.0.1:8080", "t.k"), "ws://127.0.0.1:8080/ws/signal?token=t.k");
  assert.equal(signalingUrl("https://example.org", "a b"), "wss://example.org/ws/signal?token=a+b");
  const schedule = { initialMs: 250, maxMs: 8000 };
  assert.equal(backoffDelay(0, schedule, () => 0), 125);
  assert.equal(backoffDelay(0, schedule, () => 0.999), 375);
  assert.equal(backoffDelay(3, schedule, () => 0.5), 2000);
  assert.equal(backoffDelay(30, schedule, () => 0.5), 8000);
  assert.ok(backoffDelay(30, schedule, () => 0.999) < 12000);
});

test("stats are read off the selected candidate pair and the remote side's reports", () => {
  const report = new Map(
    [
      { id: "T", type: "transport", selectedCandidatePairId: "P" },
      { id: "P", type: "candidate-pair", currentRoundTripTime: 0.012, availableOutgoingBitrate: 2_000_000 },
      { id: "R", type: "remote-inbound-rtp", fractionLost: 0.02, jitter: 0.004 },
      { id: "I", type: "inbound-rtp", jitter: 0.006 },
    ].map((s) => [s.id, s]),
  );
  assert.deepEqual(summarizeStats(report), {
    roundTripTime: 0.012,
    fractionLost: 0.02,
    jitter: 0.006,
    availableOutgoingBitrate: 2_000_000,
  });
  assert.equal(summarizeStats(new Map()), null);
});

/** A WebSocket whose server side the test plays. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.seq = 0;
    FakeSocket.all.push(this);
    FakeSocket.onCreate?.(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.();
    }, 0);
  }
  send(text) {
    const msg = JSON.parse(text);
    this.sent.push(msg);
    this.onsent?.(msg);
  }
  frame(msg) {
    this.onmessage?.({ data: JSON.stringify({ seq: ++this.seq, ...msg }) });
  }
  close(code = 1000, reason = "") {
    this.drop(code, reason);
  }
  drop(code = 1006, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
}

async function waitFor(pred, what) {
  for (let i = 0; i < 400; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A server that answers ping, join and acks like a node does. */
function serve(ws, { resume = "resumed" } = {}) {
  ws.onsent = (m) => {
    if (m.type === "ping") ws.frame({ type: "pong", ref: m.id, serverTime: 1 });
    if (m.type === "join") {
      ws.frame({
        type: "joined", roomId: m.roomId, peerId: "aaaa", sessionId: "aaaa", resumeToken: "rt", peers: [],
        participants: [{ peerId: "aaaa", userId: "u", displayName: "u", media: {} }],
        iceServers: [], callStatus: "waiting", callId: "c1", chat: [], overlays: [],
      });
    }
    if (m.type === "chat" && !ws.holdAcks) ws.frame({ type: "ack", ref: m.id });
    if (m.type === "resume") {
      if (resume === "resumed") ws.frame({ type: "resumed", roomId: "r", sessionId: m.sessionId, replayed: 0 });
      else ws.frame({ type: "resume_failed", reason: resume, message: "gone" });
    }
  };
}

function fakeCall(server = {}) {
  FakeSocket.all = [];
  // Each new socket is served from its first moment, as a node would.
  FakeSocket.onCreate = server.manual ? null : (ws) => serve(ws, FakeSocket.all.length > 1 ? server.later ?? {} : {});
  return new Call({
    url: "http://node.test",
    token: "tok",
    WebSocket: FakeSocket,
    RTCPeerConnection: FakePeerConnection,
    reconnect: { initialMs: 5, maxMs: 20, maxAttempts: 50 },
    statsIntervalMs: 0,
  });
}

test("a call connects with a ping, joins, and resolves requests on their ack", async () => {
  const call = fakeCall();
  const opened = call.open();
  await opened;
  assert.equal(FakeSocket.all[0].url, "ws://node.test/ws/signal?token=tok");
  const joined = await call.join("r", { audio: false, video: false });
  assert.equal(joined.peerId, "aaaa");
  const ack = await call.sendChat("hi");
  assert.equal(ack.type, "ack");
  call.close();
});

test("a bad token fails connect with the server's code", async () => {
  const call = fakeCall({ manual: true });
  const opened = call.open();
  await waitFor(() => FakeSocket.all.length === 1, "a socket");
  const ws = FakeSocket.all[0];
  ws.onsent = () => {};
  await waitFor(() => ws.readyState === 1, "open");
  ws.frame({ type: "error", code: "token_expired", message: "the token has expired" });
  ws.drop(1008, "token_expired");
  await assert.rejects(opened, (e) => e.code === "token_expired");
});

test("a dropped connection resumes and sends what was not acknowledged again, with its id", async () => {
  const call = fakeCall();
  const events = [];
  call.on("reconnecting", () => events.push("reconnecting"));
  call.on("reconnected", (r) => events.push(`reconnected:${r.resumed}`));
  const opened = call.open();
  await opened;
  await call.join("r", { audio: false, video: false });
  const first = FakeSocket.all[0];
  first.holdAcks = true;
  const pending = call.sendChat("are you there?");
  await waitFor(() => first.sent.some((m) => m.type === "chat"), "the chat sent");
  const chatId = first.sent.find((m) => m.type === "chat").id;
  first.drop();
  await waitFor(() => FakeSocket.all.length === 2, "a second socket");
  const second = FakeSocket.all[1];
  await waitFor(() => events.includes("reconnected:true"), "reconnected");
  const resume = second.sent.find((m) => m.type === "resume");
  assert.deepEqual(
    { sessionId: resume.sessionId, resumeToken: resume.resumeToken, lastSeq: resume.lastSeq },
    { sessionId: "aaaa", resumeToken: "rt", lastSeq: 2 },
  );
  // The unacknowledged chat goes again, after the resume, with the same id; its promise
  // resolves with the ack of the new connection.
  const again = second.sent.filter((m) => m.type === "chat");
  assert.deepEqual(again.map((m) => m.id), [chatId]);
  assert.equal((await pending).type, "ack");
  assert.deepEqual(events, ["reconnecting", "reconnected:true"]);
  call.close();
});

test("a session that cannot be resumed is joined afresh in the same room", async () => {
  const call = fakeCall({ later: { resume: "expired" } });
  const events = [];
  call.on("reconnected", (r) => events.push(r.resumed));
  const opened = call.open();
  await opened;
  await call.join("r", { audio: false, video: false });
  FakeSocket.all[0].drop();
  await waitFor(() => FakeSocket.all.length === 2, "a second socket");
  const second = FakeSocket.all[1];
  await waitFor(() => events.length === 1, "reconnected");
  assert.deepEqual(events, [false]);
  const types = second.sent.map((m) => m.type);
  assert.deepEqual(types.slice(0, 2), ["resume", "join"]);
  assert.equal(second.sent[1].roomId, "r");
  call.close();
});
