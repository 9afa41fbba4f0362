// Switchboard browser SDK: one ES module, no build step.
//
//   import { Switchboard } from "/sdk/switchboard.js";
//   const call = await Switchboard.connect({ url: "http://127.0.0.1:8080", token });
//   call.on("track", ({ peerId, stream }) => { video.srcObject = stream; });
//   await call.join("consult-42", { audio: true, video: true });
//
// What it does for the application: one WebSocket to the node's `/ws/signal`, one
// RTCPeerConnection per other peer with perfect negotiation (a polite and an impolite side,
// so two offers crossing never loop), trickle ICE, renegotiation when tracks change, an ICE
// restart when a connection fails or a peer comes back on a new network path, `id`s and
// receipts on everything it sends (kept until confirmed, sent again after a reconnect),
// automatic reconnect with backoff and jitter followed by `resume` (a fresh join when the
// session is gone), `stats` from `getStats()` every few seconds, and the server's audio-only
// fallback applied to the video senders. Types: `switchboard.d.ts` beside this file;
// the protocol underneath: docs/protocol.md. Guide: docs/sdk.md.

/** Reconnect schedule: the first retry after about `initialMs`, doubling up to `maxMs`. */
const RECONNECT_DEFAULTS = { initialMs: 250, maxMs: 8000, maxAttempts: Infinity };
/** How often connection statistics are sampled and sent. */
const STATS_INTERVAL_MS = 4000;
/** Relayed messages the client names in `resume.received` (the server's own limit). */
const RECEIVED_KEPT = 256;
/** Confirmed relayed messages sent again after a resume (docs/protocol.md, `resume`). */
const DELIVERED_RESENT = 16;
/** Longest wait for the server to answer a request (`ack`, `pong`, `joined`). */
const ANSWER_TIMEOUT_MS = 15000;

/** An error the server answered with; act on `code`. */
export class SwitchboardError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message || code);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

/** Minimal event emitter: `on` returns a function that removes the handler. */
export class Emitter {
  #handlers = new Map();

  /** @param {string} event @param {(value: any) => void} handler */
  on(event, handler) {
    if (!this.#handlers.has(event)) this.#handlers.set(event, new Set());
    this.#handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  /** @param {string} event @param {(value: any) => void} handler */
  off(event, handler) {
    this.#handlers.get(event)?.delete(handler);
  }

  /** Resolves with the next value of `event`. @param {string} event */
  once(event) {
    return new Promise((resolve) => {
      const off = this.on(event, (v) => {
        off();
        resolve(v);
      });
    });
  }

  /** @param {string} event @param {any} [value] */
  emit(event, value) {
    for (const handler of [...(this.#handlers.get(event) ?? [])]) {
      try {
        handler(value);
      } catch (e) {
        console.error(`switchboard: a "${event}" handler threw`, e);
      }
    }
  }
}

/**
 * The negotiation with one remote peer over one RTCPeerConnection: the "perfect negotiation"
 * pattern of the WebRTC specification. Both sides may offer at any time (tracks added, an ICE
 * restart); when two offers cross, the impolite side ignores the other's and the polite side
 * rolls its own back and answers. The roles come from the peer ids, so both sides agree
 * without talking: the smaller id is polite.
 *
 * Incoming descriptions and candidates are handled one at a time, in arrival order.
 */
export class PeerLink {
  /**
   * @param {object} o
   * @param {string} o.selfId this session's peer id
   * @param {string} o.peerId the remote peer's id
   * @param {RTCPeerConnection} o.pc
   * @param {(msg: object) => void} o.signal sends `offer`, `answer` or `ice-candidate`
   * @param {(e: unknown) => void} [o.onError]
   * @param {() => void} [o.beforeAnswer] runs after a remote offer is applied and before the
   *   answer is made: tracks added here ride on the offered transceivers, with no second
   *   negotiation
   */
  constructor({ selfId, peerId, pc, signal, onError, beforeAnswer }) {
    this.selfId = selfId;
    this.peerId = peerId;
    this.pc = pc;
    this.polite = selfId < peerId;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.offersSent = 0;
    this.offersReceived = 0;
    this.closed = false;
    this.remoteStream = null;
    this.#signal = signal;
    this.#beforeAnswer = beforeAnswer ?? (() => {});
    this.#onError = onError ?? ((e) => console.warn("switchboard: negotiation", e));
    pc.onnegotiationneeded = () => this.#negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && !this.closed) {
        const init = typeof candidate.toJSON === "function" ? candidate.toJSON() : candidate;
        this.#signal({ type: "ice-candidate", peerId, candidate: init });
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed") this.restartIce();
    };
  }

  #signal;
  #onError;
  #beforeAnswer;
  #queue = Promise.resolve();
  /** Candidates that could not be added yet (they came with an offer we ignored). */
  #parked = [];

  async #negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      if (this.pc.localDescription?.type !== "offer") return;
      this.offersSent += 1;
      this.#signal({ type: "offer", peerId: this.peerId, sdp: this.pc.localDescription.sdp });
    } catch (e) {
      this.#onError(e);
    } finally {
      this.makingOffer = false;
    }
  }

  /** Runs `task` after every earlier incoming message of this link. */
  #serially(task) {
    const next = this.#queue.then(task).catch((e) => this.#onError(e));
    this.#queue = next;
    return next;
  }

  /**
   * An `offer` or `answer` from the peer. Resolves with `"ignored"` when an offer that
   * collided with ours was dropped (we are the impolite side), else `"applied"`.
   * @param {"offer" | "answer"} type @param {string} sdp
   */
  handleDescription(type, sdp) {
    return this.#serially(async () => {
      if (this.closed) return "ignored";
      const pc = this.pc;
      if (type === "offer") this.offersReceived += 1;
      const readyForOffer = !this.makingOffer && (pc.signalingState === "stable" || this.settingRemoteAnswer);
      const collision = type === "offer" && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return "ignored";
      // An answer that arrives when no offer of ours is open is a leftover of a rolled back
      // exchange; applying it would fail.
      if (type === "answer" && pc.signalingState !== "have-local-offer") return "ignored";
      this.settingRemoteAnswer = type === "answer";
      try {
        await pc.setRemoteDescription({ type, sdp });
      } finally {
        this.settingRemoteAnswer = false;
      }
      await this.#unpark();
      if (type === "offer") {
        this.#beforeAnswer();
        await pc.setLocalDescription();
        this.#signal({ type: "answer", peerId: this.peerId, sdp: pc.localDescription.sdp });
      }
      return "applied";
    });
  }

  /** A trickled candidate from the peer. @param {RTCIceCandidateInit} candidate */
  handleCandidate(candidate) {
    return this.#serially(async () => {
      if (this.closed) return;
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (e) {
        // Candidates that came with an offer we ignored cannot be added now. They are kept:
        // a polite side that rolled its offer back may answer with the same ICE credentials
        // and never send them again.
        if (!this.ignoreOffer && this.pc.remoteDescription) throw e;
        this.#parked.push(candidate);
        if (this.#parked.length > 64) this.#parked.shift();
      }
    });
  }

  /** Tries the parked candidates against the description just applied. */
  async #unpark() {
    const parked = this.#parked;
    this.#parked = [];
    for (const c of parked) {
      try {
        await this.pc.addIceCandidate(c);
      } catch {
        // Candidates of credentials that are gone: nothing to do with them.
      }
    }
  }

  /**
   * Asks for new ICE credentials; the negotiation that follows is an ordinary one. The browser
   * should ask for it (`negotiationneeded`); when a second has passed without an offer while
   * nothing else was negotiating, the link makes the offer itself (the next offer carries the
   * new credentials either way).
   */
  restartIce() {
    if (this.closed || typeof this.pc.restartIce !== "function") return;
    const offers = this.offersSent;
    this.pc.restartIce();
    setTimeout(() => {
      if (!this.closed && this.offersSent === offers && !this.makingOffer && this.pc.signalingState === "stable") {
        this.#negotiate();
      }
    }, 1000);
  }

  /**
   * The peer came back on a new connection, and its address may have changed. When both
   * sides resumed (their server restarted) both are told at once, and two restarts would
   * cross: the impolite side restarts ICE at once, the polite one only if no offer has come
   * from the other within a moment.
   */
  restartAfterResume() {
    if (!this.polite) return this.restartIce();
    const offers = this.offersReceived;
    setTimeout(() => {
      if (!this.closed && this.offersReceived === offers) this.restartIce();
    }, 1500);
  }

  close() {
    this.closed = true;
    try {
      this.pc.close();
    } catch {
      // Closing twice is harmless.
    }
  }
}

/** Entry point. */
export class Switchboard {
  /**
   * Opens a signaling connection to a node and checks the token (a `ping` answered).
   * @param {import("./switchboard.d.ts").ConnectOptions} options
   * @returns {Promise<Call>}
   */
  static async connect(options) {
    const call = new Call(options);
    await call.open();
    return call;
  }
}

/** The WebSocket URL of a node's signaling endpoint, from its base URL. */
export function signalingUrl(base, token) {
  const u = new URL("/ws/signal", base);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.searchParams.set("token", token);
  return u.toString();
}

/** Backoff with jitter: between half and one and a half times the doubled delay. */
export function backoffDelay(attempt, { initialMs, maxMs }, random = Math.random) {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
  return Math.round(base * (0.5 + random()));
}

/**
 * A connection to Switchboard, and the call in the room it joins. Events: `joined`,
 * `peer_joined`, `peer_left`, `peer_disconnected`, `peer_resumed`, `track`, `control`,
 * `overlay`, `chat`, `call_status`, `quality`, `fallback`, `video_paused`, `snapshot_ready`,
 * `reconnecting`, `reconnected`, `media_error`, `error`, `closed`.
 */
export class Call extends Emitter {
  /** @param {import("./switchboard.d.ts").ConnectOptions} options */
  constructor(options) {
    super();
    if (!options?.url || !options?.token) throw new TypeError("connect needs { url, token }");
    this.urls = Array.isArray(options.url) ? [...options.url] : [options.url];
    this.token = options.token;
    this.getToken = options.getToken ?? null;
    this.iceServers = options.iceServers ?? null;
    this.iceTransportPolicy = options.iceTransportPolicy ?? "all";
    this.reconnect = { ...RECONNECT_DEFAULTS, ...(options.reconnect ?? {}) };
    this.statsIntervalMs = options.statsIntervalMs ?? STATS_INTERVAL_MS;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.RTCPeerConnection = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "connecting";
    this.room = null;
    this.localStream = null;
    this.participants = new Map();
    this.callStatus = null;
    this.fallback = "normal";
    this.videoEnabled = true;
    this.audioMuted = false;
    this.screenStream = null;
    /** @type {Map<string, PeerLink>} */
    this.links = new Map();
    this.#urlIndex = 0;
  }

  #ws = null;
  #urlIndex;
  #lastSeq = 0;
  #nextId = 0;
  /** Requests waiting for their answer, by id. */
  #waiting = new Map();
  /** Messages with an id, in the order sent, until acknowledged (relayed ones: until delivered). */
  #outbox = [];
  /** The last relayed messages confirmed delivered, sent again after a resume. */
  #delivered = [];
  /** (peerId, msgId) of relayed messages received lately, for `resume.received`. */
  #received = [];
  #joinWaiter = null;
  #statsTimer = null;
  #lastStatsAt = 0;
  #reconnecting = null;
  #joinOptions = null;

  get peerId() {
    return this.room?.peerId ?? null;
  }

  get url() {
    return this.urls[this.#urlIndex % this.urls.length];
  }

  /** Opens the socket and waits for a `pong`, so a bad token fails here with its code. */
  async open() {
    try {
      await this.#openSocket();
      await this.#request({ type: "ping" });
      this.state = "open";
    } catch (e) {
      // A connection that never worked is not reconnected: the caller decides.
      this.state = "closed";
      const ws = this.#ws;
      this.#ws = null;
      ws?.close(1000, "connect failed");
      throw e;
    }
  }

  #openSocket() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WebSocket(signalingUrl(this.url, this.token));
      } catch (e) {
        reject(e);
        return;
      }
      this.#ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (ev) => this.#onText(ev.data);
      ws.onclose = (ev) => {
        if (this.#ws !== ws) return;
        this.#ws = null;
        const error = new SwitchboardError(ev.reason || "connection_closed", `closed with ${ev.code} ${ev.reason}`);
        // Requests kept in the outbox are sent again after a reconnect: their callers wait on.
        for (const [id, w] of this.#waiting) {
          if (!this.#outbox.some((e) => e.id === id)) {
            this.#waiting.delete(id);
            w.reject(error);
          }
        }
        this.#joinWaiter?.reject(error);
        this.#joinWaiter = null;
        this.#reconnecting?.resolve({ dropped: true });
        if (!opened) reject(error);
        else this.#onClosed(ev.code, ev.reason);
      };
      ws.onerror = () => {
        // A close event follows with the details.
      };
    });
  }

  #send(msg) {
    if (this.#ws && this.#ws.readyState === 1) {
      this.#ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /** Sends `msg` with an id and resolves with the server's answer (`ack`, `pong`, ...). */
  #request(msg, { keep = false } = {}) {
    const id = `c${++this.#nextId}`;
    const framed = { ...msg, id };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#waiting.delete(id)) reject(new SwitchboardError("timeout", `no answer to ${msg.type}`));
      }, ANSWER_TIMEOUT_MS);
      const done = (f) => (v) => {
        clearTimeout(timer);
        f(v);
      };
      this.#waiting.set(id, { resolve: done(resolve), reject: done(reject), msg: framed });
      if (keep) this.#outbox.push({ id, msg: framed, acked: false, relayed: false });
      if (!this.#send(framed) && !keep) {
        this.#waiting.delete(id);
        clearTimeout(timer);
        reject(new SwitchboardError("not_connected", "the connection is down"));
      }
    });
  }

  /** A relayed message (offer, answer, candidate): id and receipt, kept until delivered. */
  #relay(msg) {
    const id = `r${++this.#nextId}`;
    const framed = { ...msg, id, receipt: true };
    this.#outbox.push({ id, msg: framed, acked: false, relayed: true });
    this.#send(framed);
  }

  #onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (typeof msg.seq === "number" && msg.seq > this.#lastSeq) this.#lastSeq = msg.seq;
    const handler = this.#handlers[msg.type];
    if (handler) handler.call(this, msg);
    else this.emit("message", msg);
  }

  #answer(ref, value) {
    const w = this.#waiting.get(ref);
    if (w) {
      this.#waiting.delete(ref);
      w.resolve(value);
    }
  }

  #handlers = {
    pong(msg) {
      this.#answer(msg.ref, msg);
    },
    ack(msg) {
      const entry = this.#outbox.find((e) => e.id === msg.ref);
      if (entry) {
        entry.acked = true;
        if (!entry.relayed) this.#outbox.splice(this.#outbox.indexOf(entry), 1);
      }
      this.#answer(msg.ref, msg);
    },
    delivered(msg) {
      const i = this.#outbox.findIndex((e) => e.id === msg.ref);
      if (i >= 0) {
        const [entry] = this.#outbox.splice(i, 1);
        this.#delivered.push(entry);
        if (this.#delivered.length > DELIVERED_RESENT) this.#delivered.shift();
      }
    },
    error(msg) {
      const err = new SwitchboardError(msg.code, msg.message);
      const w = msg.ref !== undefined && this.#waiting.get(msg.ref);
      if (w) {
        this.#waiting.delete(msg.ref);
        const i = this.#outbox.findIndex((e) => e.id === msg.ref);
        if (i >= 0) this.#outbox.splice(i, 1);
        w.reject(err);
      } else if (this.#joinWaiter && msg.ref === this.#joinWaiter.id) {
        this.#joinWaiter.reject(err);
        this.#joinWaiter = null;
      } else {
        this.emit("error", err);
      }
    },
    joined(msg) {
      this.room = msg;
      this.callStatus = msg.callStatus;
      this.participants = new Map(msg.participants.map((p) => [p.peerId, p]));
      for (const id of msg.peers) this.#link(id, { offer: true });
      this.#startStats();
      const waiter = this.#joinWaiter;
      this.#joinWaiter = null;
      waiter?.resolve(msg);
      this.emit("joined", msg);
    },
    left() {
      this.#closeLinks();
      this.room = null;
    },
    peer_joined(msg) {
      this.participants.set(msg.peerId, msg.participant);
      this.#link(msg.peerId);
      this.emit("peer_joined", { peerId: msg.peerId, participant: msg.participant });
    },
    peer_left(msg) {
      this.links.get(msg.peerId)?.close();
      this.links.delete(msg.peerId);
      const participant = this.participants.get(msg.peerId);
      this.participants.delete(msg.peerId);
      // Nothing more will be confirmed to a peer that has left.
      this.#outbox = this.#outbox.filter((e) => !(e.relayed && e.msg.peerId === msg.peerId));
      this.emit("peer_left", { peerId: msg.peerId, reason: msg.reason, participant });
    },
    peer_disconnected(msg) {
      this.emit("peer_disconnected", { peerId: msg.peerId });
    },
    peer_resumed(msg) {
      if (msg.iceRestart) this.links.get(msg.peerId)?.restartAfterResume();
      this.emit("peer_resumed", { peerId: msg.peerId, iceRestart: msg.iceRestart });
    },
    offer(msg) {
      this.#noteReceived(msg);
      this.#link(msg.peerId).handleDescription("offer", msg.sdp);
    },
    answer(msg) {
      this.#noteReceived(msg);
      this.#link(msg.peerId).handleDescription("answer", msg.sdp);
    },
    "ice-candidate"(msg) {
      this.#noteReceived(msg);
      this.#link(msg.peerId).handleCandidate(msg.candidate);
    },
    control(msg) {
      const p = this.participants.get(msg.peerId);
      if (p) p.media = msg.media;
      this.emit("control", { peerId: msg.peerId, action: msg.action, media: msg.media });
    },
    overlay(msg) {
      this.emit("overlay", { peerId: msg.peerId, overlay: msg.overlay });
    },
    chat(msg) {
      this.emit("chat", msg.message);
    },
    call_status(msg) {
      this.callStatus = msg.status;
      this.emit("call_status", { status: msg.status, callId: msg.callId });
    },
    connection_quality(msg) {
      this.emit("quality", { peerId: msg.peerId, level: msg.level, score: msg.score, mos: msg.mos });
    },
    fallback(msg) {
      this.fallback = msg.mode;
      this.#applyVideoSending();
      this.emit("fallback", { mode: msg.mode, reason: msg.reason });
    },
    video_paused(msg) {
      const p = this.participants.get(msg.peerId);
      if (p?.media) p.media.videoPaused = msg.paused;
      this.emit("video_paused", { peerId: msg.peerId, paused: msg.paused, reason: msg.reason });
    },
    snapshot_ready(msg) {
      this.emit("snapshot_ready", msg);
    },
    lobby_waiting(msg) {
      this.emit("lobby_waiting", { lobby: msg.lobby, ahead: msg.ahead });
    },
    paired(msg) {
      this.emit("paired", { lobby: msg.lobby, roomId: msg.roomId });
    },
    lobby_timeout(msg) {
      const waiter = this.#joinWaiter;
      this.#joinWaiter = null;
      waiter?.reject(new SwitchboardError("lobby_timeout", `nobody to meet in lobby ${msg.lobby} yet`));
      this.emit("lobby_timeout", { lobby: msg.lobby, waitedMs: msg.waitedMs });
    },
    lobby_left(msg) {
      const waiter = this.#joinWaiter;
      this.#joinWaiter = null;
      waiter?.reject(new SwitchboardError("lobby_left", `left lobby ${msg.lobby}`));
      this.emit("lobby_left", { lobby: msg.lobby });
    },
    notification(msg) {
      this.emit("notification", msg.notification);
    },
    refresh_token(msg) {
      // The token runs out soon: a fresh one from the application keeps the call going.
      this.emit("refresh_token", { expiresAt: msg.expiresAt });
      if (!this.getToken) return;
      Promise.resolve(this.getToken())
        .then((token) => {
          this.token = token;
          this.#send({ type: "token", token });
        })
        .catch((e) => this.emit("error", e));
    },
    removed(msg) {
      // An operator took this session out: the call is over here (join again to come back).
      this.#stopStats();
      this.#closeLinks();
      this.room = null;
      this.#joinOptions = null;
      this.emit("removed", { roomId: msg.roomId, reason: msg.reason });
    },
    muted_by_admin(msg) {
      if (msg.audio) {
        this.audioMuted = true;
        for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = false;
      }
      if (msg.video) {
        this.videoEnabled = false;
        for (const t of this.localStream?.getVideoTracks() ?? []) t.enabled = false;
      }
      this.emit("muted_by_admin", { audio: msg.audio, video: msg.video });
    },
    grants_changed(msg) {
      this.emit("grants_changed", { grants: msg.grants });
    },
    token_refreshed(msg) {
      this.emit("token_refreshed", { expiresAt: msg.expiresAt });
    },
    goaway(msg) {
      // The node closes the socket next; the reconnect moves to the next URL.
      this.#urlIndex += 1;
      this.emit("goaway", msg);
    },
    resumed(msg) {
      this.#reconnecting?.resolve({ resumed: true, msg });
    },
    resume_failed(msg) {
      this.#reconnecting?.resolve({ resumed: false, msg });
    },
  };

  #noteReceived(msg) {
    if (msg.msgId === undefined) return;
    this.#received.push({ peerId: msg.peerId, msgId: msg.msgId });
    if (this.#received.length > RECEIVED_KEPT) this.#received.shift();
  }

  #peerConnection() {
    const config = { iceTransportPolicy: this.iceTransportPolicy };
    config.iceServers = this.iceServers ?? this.room?.iceServers ?? [];
    return new this.RTCPeerConnection(config);
  }

  /**
   * The link with `peerId`, made the first time it is needed. The newcomer of a pair (who
   * learns of the other from `joined`) offers at once, with its tracks or, without media,
   * receive-only transceivers; the other side adds its tracks when that offer arrives, so a
   * pair's first negotiation is one offer and one answer, not two crossing offers.
   */
  #link(peerId, { offer = false } = {}) {
    let link = this.links.get(peerId);
    if (link) return link;
    const pc = this.#peerConnection();
    let tracksAdded = false;
    const addTracks = () => {
      if (tracksAdded) return;
      tracksAdded = true;
      const tracks = this.#sendingTracks();
      for (const track of tracks) pc.addTrack(track, this.localStream);
      if (offer && tracks.length === 0) {
        pc.addTransceiver("audio", { direction: "recvonly" });
        pc.addTransceiver("video", { direction: "recvonly" });
      }
      this.#applyVideoSending(link);
    };
    link = new PeerLink({
      selfId: this.peerId,
      peerId,
      pc,
      signal: (m) => this.#relay(m),
      onError: (e) => this.emit("error", e),
      beforeAnswer: addTracks,
    });
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? link.remoteStream ?? new MediaStream();
      if (!streams[0]) stream.addTrack(track);
      link.remoteStream = stream;
      this.emit("track", { peerId, stream, track });
    };
    pc.onconnectionstatechange = () => {
      this.emit("peer_connection", { peerId, state: pc.connectionState });
    };
    this.links.set(peerId, link);
    if (offer) addTracks();
    return link;
  }

  #sendingTracks() {
    if (!this.localStream) return [];
    const tracks = this.localStream.getAudioTracks();
    const video = this.screenStream?.getVideoTracks()[0] ?? this.localStream.getVideoTracks()[0];
    return video ? [...tracks, video] : tracks;
  }

  #closeLinks() {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  /**
   * Joins a room with the camera and microphone (or `options.stream`). When the camera or
   * microphone cannot be had (permission denied, no device) it joins with what it has,
   * audio only or receive only, and emits `media_error`.
   * @param {string} roomId
   * @param {import("./switchboard.d.ts").JoinOptions} [options]
   */
  async join(roomId, options = {}) {
    const { audio = true, video = true, stream, displayName } = options;
    this.#joinOptions = { audio, video, displayName };
    if (stream) this.localStream = stream;
    else if (!this.localStream && (audio || video)) this.localStream = await this.#getMedia(audio, video);
    return this.#join(roomId, displayName);
  }

  /**
   * Waits in a lobby to be paired with someone (whoever has waited longest among those whose
   * `tags` meet these, or anyone when either side has none), then joins the fresh room of the
   * pair: resolves with its `joined`, as `join` does. Emits `lobby_waiting` while waiting and
   * `paired` when a partner is found; rejects with code `lobby_timeout` when the lobby's wait
   * runs out, and with the server's code when it refuses.
   * @param {string} lobbyId
   * @param {import("./switchboard.d.ts").LobbyOptions} [options]
   */
  async lobby(lobbyId, options = {}) {
    const { audio = true, video = true, stream, displayName, tags = [] } = options;
    this.#joinOptions = { audio, video, displayName };
    if (stream) this.localStream = stream;
    else if (!this.localStream && (audio || video)) this.localStream = await this.#getMedia(audio, video);
    const id = `l${++this.#nextId}`;
    return new Promise((resolve, reject) => {
      this.#joinWaiter = { id, resolve, reject };
      if (!this.#send({ type: "lobby_join", lobby: lobbyId, tags, id })) {
        this.#joinWaiter = null;
        reject(new SwitchboardError("not_connected", "the connection is down"));
      }
    });
  }

  /** Stops waiting in a lobby (the pending `lobby` call rejects with `lobby_left`). */
  leaveLobby(lobbyId) {
    return this.#send({ type: "lobby_leave", lobby: lobbyId });
  }

  #join(roomId, displayName) {
    const id = `j${++this.#nextId}`;
    const msg = { type: "join", roomId, id };
    if (displayName) msg.displayName = displayName;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#joinWaiter?.id === id) {
          this.#joinWaiter = null;
          reject(new SwitchboardError("timeout", "no answer to join"));
        }
      }, ANSWER_TIMEOUT_MS);
      this.#joinWaiter = {
        id,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      if (!this.#send(msg)) {
        this.#joinWaiter = null;
        clearTimeout(timer);
        reject(new SwitchboardError("not_connected", "the connection is down"));
      }
    });
  }

  async #getMedia(audio, video) {
    const media = globalThis.navigator?.mediaDevices;
    if (!media?.getUserMedia) {
      this.emit("media_error", { error: new Error("no media devices here"), using: "none" });
      return null;
    }
    const attempts = [];
    if (audio || video) attempts.push({ audio, video, using: audio && video ? "audio+video" : video ? "video" : "audio" });
    if (audio && video) attempts.push({ audio: true, video: false, using: "audio" });
    let first = null;
    for (const a of attempts) {
      try {
        const s = await media.getUserMedia({ audio: a.audio, video: a.video });
        if (first) this.emit("media_error", { error: first, using: a.using });
        return s;
      } catch (e) {
        first ??= e;
      }
    }
    this.emit("media_error", { error: first, using: "none" });
    return null;
  }

  /** Mutes (or unmutes) the microphone; the others see it in `control`. */
  async mute(muted = true) {
    this.audioMuted = muted;
    for (const t of this.localStream?.getAudioTracks() ?? []) t.enabled = !muted;
    return this.#request({ type: "control", action: muted ? "mute_audio" : "unmute_audio" }, { keep: true });
  }

  /** Turns the camera off or on; the others see it in `control`. */
  async setVideo(enabled) {
    this.videoEnabled = enabled;
    for (const t of this.localStream?.getVideoTracks() ?? []) t.enabled = enabled;
    return this.#request({ type: "control", action: enabled ? "video_on" : "video_off" }, { keep: true });
  }

  /**
   * Shares the screen in place of the camera (`getDisplayMedia`), or stops sharing
   * (`on = false`, or when the browser's own "stop sharing" ends the track).
   */
  async shareScreen(on = true) {
    if (on && !this.screenStream) {
      this.screenStream = await globalThis.navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      const track = this.screenStream.getVideoTracks()[0];
      track.addEventListener("ended", () => this.shareScreen(false));
      await this.#setVideoTrack(track);
      return this.#request({ type: "control", action: "screen_share_start" }, { keep: true });
    }
    if (!on && this.screenStream) {
      for (const t of this.screenStream.getTracks()) t.stop();
      this.screenStream = null;
      await this.#setVideoTrack(this.localStream?.getVideoTracks()[0] ?? null);
      return this.#request({ type: "control", action: "screen_share_stop" }, { keep: true });
    }
    return null;
  }

  /** Puts `track` on every link's video sender: replaced in place, or added (a renegotiation). */
  async #setVideoTrack(track) {
    for (const link of this.links.values()) {
      const sender = link.pc.getSenders().find((s) => s.track?.kind === "video" || s.__switchboardVideo);
      if (sender) {
        sender.__switchboardVideo = true;
        await sender.replaceTrack(track);
      } else if (track) {
        const added = link.pc.addTrack(track, this.screenStream ?? this.localStream ?? new MediaStream([track]));
        added.__switchboardVideo = true;
      }
    }
  }

  /** Sends the video or stops it, as the user's toggle and the server's fallback say. */
  #applyVideoSending(only) {
    const active = this.fallback !== "audio_only";
    for (const link of only ? [only] : this.links.values()) {
      for (const sender of link.pc.getSenders()) {
        if (sender.track?.kind !== "video") continue;
        const params = sender.getParameters?.();
        if (!params?.encodings?.length) continue;
        if (params.encodings.every((e) => e.active === active)) continue;
        for (const e of params.encodings) e.active = active;
        sender.setParameters(params).catch((e) => this.emit("error", e));
      }
    }
  }

  /** Sends a chat message; resolves when the room has stored it. @param {string} text */
  sendChat(text) {
    return this.#request({ type: "chat", text }, { keep: true });
  }

  /**
   * Shows an overlay to the others: `{kind:"pointer",x,y,color?}`,
   * `{kind:"measure",points,label?}` or `{kind:"clear"}`, coordinates 0..1 over the video.
   */
  sendOverlay(overlay) {
    return this.#request({ type: "overlay", overlay });
  }

  /** Sends an in-call control action (see docs/protocol.md, `control`). */
  control(action) {
    return this.#request({ type: "control", action }, { keep: true });
  }

  /**
   * Grabs a frame of `peerId`'s video (this session's own id: the local camera), posts it as
   * a snapshot of the room, and resolves with the job (`{jobId, state}`); `snapshot_ready`
   * follows with the report's id and verdict.
   * @param {string} peerId
   * @param {{subject?: string}} [options] what the snapshot is of; by default the peer's user and "camera"
   */
  async snapshot(peerId, options = {}) {
    if (!this.room) throw new SwitchboardError("not_joined", "join a room first");
    const stream = peerId === this.peerId ? this.localStream : this.links.get(peerId)?.remoteStream;
    if (!stream || stream.getVideoTracks().length === 0) {
      throw new SwitchboardError("no_video", `there is no video of ${peerId}`);
    }
    const who = this.participants.get(peerId)?.userId ?? peerId;
    const subject = options.subject ?? `${who}-camera`;
    const image = await grabFrame(stream);
    const form = new FormData();
    form.append("subject", subject);
    form.append("image", image, "snapshot.png");
    return this.#api("POST", `/rooms/${encodeURIComponent(this.room.roomId)}/snapshots`, form);
  }

  /** A signed report (`GET /reports/{id}`). */
  report(reportId) {
    return this.#api("GET", `/reports/${encodeURIComponent(reportId)}`);
  }

  /** An evidence artifact (snapshot, baseline, heatmap) as a Blob. */
  async evidence(cid) {
    const res = await this.fetch(new URL(`/evidence/${encodeURIComponent(cid)}`, this.url), {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!res.ok) throw await apiError(res);
    return res.blob();
  }

  /** The appointments this user takes part in, soonest first. */
  async appointments() {
    return (await this.#api("GET", "/appointments?mine")).appointments;
  }

  /** One appointment. */
  appointment(id) {
    return this.#api("GET", `/appointments/${encodeURIComponent(id)}`);
  }

  /** Books an appointment: `{hostId, guestIds, start (RFC 3339 or a Date), online, description}`. */
  book(booking) {
    const start = booking.start instanceof Date ? booking.start.toISOString() : booking.start;
    return this.#api("POST", "/appointments", { ...booking, start });
  }

  /** A step of an appointment: `confirm`, `start`, `end` or `cancel`; resolves to the appointment after it. */
  appointmentStep(id, step) {
    return this.#api("POST", `/appointments/${encodeURIComponent(id)}/${step}`, {});
  }

  /** This user's notifications (unread first) and how many are unread. */
  notifications(limit = 50) {
    return this.#api("GET", `/notifications?limit=${limit}`);
  }

  /** Marks a notification read. */
  readNotification(id) {
    return this.#api("POST", `/notifications/${encodeURIComponent(id)}/read`, {});
  }

  async #api(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` };
    let payload = body;
    if (body && !(body instanceof FormData)) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const res = await this.fetch(new URL(path, this.url), { method, headers, body: payload });
    if (!res.ok) throw await apiError(res);
    return res.json();
  }

  /** Ends the call for everyone (the room stays open). */
  end() {
    return this.#request({ type: "end_call" }, { keep: true });
  }

  /** Leaves the room; the connection stays open for another `join`. */
  async leave() {
    this.#stopStats();
    this.#closeLinks();
    this.#send({ type: "leave" });
    this.room = null;
    this.#joinOptions = null;
  }

  /** Leaves, stops the camera and microphone, and closes the connection for good. */
  close() {
    this.state = "closed";
    this.#stopStats();
    this.#closeLinks();
    for (const t of this.localStream?.getTracks() ?? []) t.stop();
    for (const t of this.screenStream?.getTracks() ?? []) t.stop();
    this.#reconnecting?.resolve({ resumed: false, closed: true });
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: "leave" }));
      ws.close(1000, "bye");
    }
    this.emit("closed", { code: 1000, reason: "closed by the application" });
  }

  // --- Reconnect and resume -------------------------------------------------------------

  #onClosed(code, reason) {
    // Only a working call reconnects; the reconnect loop handles its own failed sockets.
    if (this.state !== "open") return;
    // 1008 is a policy close (a bad or expired token, abuse): the session is gone with it.
    const sessionLost = code === 1008 || code === 1009;
    this.#reconnect({ code, reason, sessionLost });
  }

  async #reconnect({ code, reason, sessionLost }) {
    if (this.state === "reconnecting") return;
    this.state = "reconnecting";
    this.#stopStats();
    this.emit("reconnecting", { code, reason });
    for (let attempt = 0; attempt < this.reconnect.maxAttempts; attempt++) {
      await sleep(backoffDelay(attempt, this.reconnect));
      if (this.state === "closed") return;
      if (attempt > 0) this.#urlIndex += 1;
      try {
        if (this.getToken && (sessionLost || attempt > 0)) this.token = await this.getToken();
        await this.#openSocket();
      } catch {
        continue;
      }
      try {
        const outcome = await this.#restore(sessionLost);
        if (outcome === "retry") continue;
        this.state = "open";
        this.#startStats();
        this.emit("reconnected", { resumed: outcome === "resumed", attempts: attempt + 1 });
        return;
      } catch {
        // The new socket failed too; try again.
      }
    }
    this.state = "closed";
    this.emit("closed", { code, reason: "gave up reconnecting" });
  }

  /** After a new socket opened: resume the session, or join afresh. */
  async #restore(sessionLost) {
    const room = this.room;
    if (!room) return "fresh";
    if (!sessionLost) {
      const answer = new Promise((resolve) => {
        this.#reconnecting = { resolve };
      });
      this.#send({
        type: "resume",
        sessionId: room.sessionId,
        resumeToken: room.resumeToken,
        lastSeq: this.#lastSeq,
        received: this.#received,
      });
      const outcome = await withTimeout(answer, ANSWER_TIMEOUT_MS);
      this.#reconnecting = null;
      if (!outcome || outcome.dropped) throw new SwitchboardError("connection_closed", "no answer to resume");
      if (outcome.closed) return "fresh";
      if (outcome?.resumed) {
        this.#resend();
        return "resumed";
      }
      if (outcome?.msg?.reason === "unavailable") {
        this.#ws?.close(1000, "retry");
        return "retry";
      }
    }
    // The session is gone: a new one in the same room, with new peer ids and links.
    this.#closeLinks();
    this.#outbox = this.#outbox.filter((e) => !e.relayed);
    this.#delivered = [];
    this.#received = [];
    this.#lastSeq = 0;
    this.room = null;
    await this.#join(room.roomId, this.#joinOptions?.displayName);
    this.#resend();
    return "fresh";
  }

  /** After `resumed`: the recently confirmed relayed messages, then everything unconfirmed. */
  #resend() {
    for (const e of this.#delivered) this.#send(e.msg);
    for (const e of this.#outbox) this.#send(e.msg);
  }

  // --- Statistics -----------------------------------------------------------------------

  #startStats() {
    this.#stopStats();
    if (!this.statsIntervalMs) return;
    this.#statsTimer = setInterval(() => this.#sampleStats(), this.statsIntervalMs);
  }

  #stopStats() {
    if (this.#statsTimer) clearInterval(this.#statsTimer);
    this.#statsTimer = null;
  }

  async #sampleStats() {
    const samples = [];
    for (const link of this.links.values()) {
      try {
        const s = summarizeStats(await link.pc.getStats());
        if (s) samples.push(s);
      } catch {
        // A link closing while sampled.
      }
    }
    if (samples.length === 0) return;
    // One sample per connection: the worst link speaks for the call.
    const worst = {
      roundTripTime: Math.max(...samples.map((s) => s.roundTripTime)),
      fractionLost: Math.max(...samples.map((s) => s.fractionLost)),
      jitter: Math.max(...samples.map((s) => s.jitter)),
    };
    const bitrates = samples.map((s) => s.availableOutgoingBitrate).filter((b) => b !== undefined);
    if (bitrates.length) worst.availableOutgoingBitrate = Math.min(...bitrates);
    const timestamp = Math.max(Date.now(), this.#lastStatsAt + 1);
    this.#lastStatsAt = timestamp;
    this.#send({ type: "stats", timestamp, ...worst });
  }
}

/**
 * The figures the server scores, from one `RTCStatsReport`: the selected candidate pair's
 * round trip and available bitrate, the loss and jitter the remote side reported.
 * Returns null before a candidate pair has been chosen.
 */
export function summarizeStats(report) {
  let pair = null;
  let lost = 0;
  let jitter = 0;
  let rtt = null;
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  for (const s of byId.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) ?? pair;
  }
  for (const s of byId.values()) {
    if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    if (s.type === "remote-inbound-rtp") {
      if (typeof s.fractionLost === "number") lost = Math.max(lost, s.fractionLost);
      if (typeof s.jitter === "number") jitter = Math.max(jitter, s.jitter);
      if (typeof s.roundTripTime === "number") rtt = Math.max(rtt ?? 0, s.roundTripTime);
    }
    if (s.type === "inbound-rtp" && typeof s.jitter === "number") jitter = Math.max(jitter, s.jitter);
  }
  if (!pair) return null;
  const summary = {
    roundTripTime: pair.currentRoundTripTime ?? rtt ?? 0,
    fractionLost: Math.min(1, Math.max(0, lost)),
    jitter,
  };
  if (typeof pair.availableOutgoingBitrate === "number") summary.availableOutgoingBitrate = pair.availableOutgoingBitrate;
  return summary;
}

/** One frame of a stream's video as a PNG Blob. */
export async function grabFrame(stream) {
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.srcObject = stream;
  try {
    await video.play();
    if (!video.videoWidth) {
      await withTimeout(new Promise((r) => video.addEventListener("loadeddata", r, { once: true })), 5000);
    }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    return await new Promise((resolve, reject) =>
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("no frame"))), "image/png"),
    );
  } finally {
    video.srcObject = null;
  }
}

async function apiError(res) {
  try {
    const body = await res.json();
    return new SwitchboardError(body.code ?? `http_${res.status}`, body.message ?? res.statusText);
  } catch {
    return new SwitchboardError(`http_${res.status}`, res.statusText);
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout(promise, ms) {
  return Promise.race([promise, sleep(ms).then(() => null)]);
}
