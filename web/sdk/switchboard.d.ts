// Types of the Switchboard browser SDK (switchboard.js). The protocol underneath is
// docs/protocol.md; the guide is docs/sdk.md.

export interface ConnectOptions {
  /** The node's base URL, `http(s)://host:port`; several nodes of a cluster to rotate through on reconnect. */
  url: string | string[];
  /** A token from `POST /auth/token`. */
  token: string;
  /** Called for a fresh token (same user) when the node says the current one runs out soon (`refresh_token`: the call goes on with it), and when reconnecting after it may have expired. */
  getToken?: () => Promise<string>;
  /** ICE servers to use instead of those the node hands out in `joined`. */
  iceServers?: RTCIceServer[];
  /** `"relay"` forces every connection through TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Reconnect schedule (defaults: 250 ms doubling to 8 s, without end). */
  reconnect?: { initialMs?: number; maxMs?: number; maxAttempts?: number };
  /** How often `stats` are sampled and sent, in ms (default 4000; 0 turns it off). */
  statsIntervalMs?: number;
  /** Replacements for the browser's globals (tests, other runtimes). */
  WebSocket?: typeof WebSocket;
  RTCPeerConnection?: typeof RTCPeerConnection;
  fetch?: typeof fetch;
}

export interface JoinOptions {
  audio?: boolean;
  video?: boolean;
  /** Media to send instead of the camera and microphone. */
  stream?: MediaStream;
  displayName?: string;
}

export interface LobbyOptions extends JoinOptions {
  /** What to look for: two people match when they share a tag or either has none. */
  tags?: string[];
}

export interface MediaState {
  audioMuted: boolean;
  videoOff: boolean;
  screenSharing: boolean;
  camera: "user" | "environment";
  videoPaused: boolean;
}

export interface Participant {
  peerId: string;
  userId: string;
  displayName: string;
  media: MediaState;
  joinedAt: number;
}

export interface ChatMessage {
  id: string;
  roomId: string;
  seq: number;
  peerId: string;
  userId: string;
  displayName: string;
  text: string;
  sentAt: number;
}

export type Overlay =
  | { kind: "pointer"; x: number; y: number; color?: string }
  | { kind: "measure"; points: { x: number; y: number }[]; label?: string }
  | { kind: "clear" };

export interface Joined {
  roomId: string;
  peerId: string;
  sessionId: string;
  resumeToken: string;
  peers: string[];
  participants: Participant[];
  iceServers: RTCIceServer[];
  callStatus: CallStatus;
  callId: string;
  chat: ChatMessage[];
  overlays: { peerId: string; overlay: Overlay }[];
}

export type CallStatus = "not_started" | "waiting" | "active" | "ended";

export interface SnapshotReady {
  jobId: string;
  reportId: string;
  subject: string;
  verdict: "baseline" | "unchanged" | "changed" | "lighting";
  score: number;
  requestedBy: string;
}

export type AppointmentStatus = "proposed" | "booked" | "arrived" | "fulfilled" | "cancelled" | "noshow";

export interface Appointment {
  id: string;
  roomId: string;
  hostId: string;
  guestIds: string[];
  start: string;
  online: boolean;
  description?: string;
  status: AppointmentStatus;
  callStatus: CallStatus;
  createdBy: string;
  createdAt: number;
  confirmedAt: number | null;
  startedAt: number | null;
  arrivedAt: number | null;
  endedAt: number | null;
  endedBy: string | null;
  version: number;
  joinOpensAt: string;
  noShowAt: string;
}

export interface Notification {
  id: string;
  userId: string;
  kind: string;
  title: string;
  data: { appointmentId?: string; roomId?: string; status?: AppointmentStatus; callStatus?: CallStatus };
  createdAt: number;
  readAt: number | null;
}

export interface CallEvents {
  notification: Notification;
  refresh_token: { expiresAt: number };
  token_refreshed: { expiresAt: number };
  removed: { roomId: string; reason: string };
  muted_by_admin: { audio: boolean; video: boolean };
  grants_changed: { grants: Record<string, boolean> };
  joined: Joined;
  lobby_waiting: { lobby: string; ahead: number };
  paired: { lobby: string; roomId: string };
  lobby_timeout: { lobby: string; waitedMs: number };
  lobby_left: { lobby: string };
  peer_joined: { peerId: string; participant: Participant };
  peer_left: { peerId: string; reason: string; participant?: Participant };
  peer_disconnected: { peerId: string };
  peer_resumed: { peerId: string; iceRestart: boolean };
  peer_connection: { peerId: string; state: RTCPeerConnectionState };
  track: { peerId: string; stream: MediaStream; track: MediaStreamTrack };
  control: { peerId: string; action: string; media: MediaState };
  overlay: { peerId: string; overlay: Overlay };
  chat: ChatMessage;
  call_status: { status: CallStatus; callId: string };
  quality: { peerId: string; level: "good" | "fair" | "poor"; score: number; mos: number };
  fallback: { mode: "audio_only" | "normal"; reason: string };
  video_paused: { peerId: string; paused: boolean; reason: string };
  snapshot_ready: SnapshotReady;
  reconnecting: { code: number; reason: string };
  reconnected: { resumed: boolean; attempts: number };
  goaway: { reason: string; reconnect: boolean };
  media_error: { error: unknown; using: "audio+video" | "audio" | "video" | "none" };
  error: SwitchboardError | unknown;
  closed: { code: number; reason: string };
  message: Record<string, unknown>;
}

export class SwitchboardError extends Error {
  readonly code: string;
}

export class Call {
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly peerId: string | null;
  readonly room: Joined | null;
  readonly localStream: MediaStream | null;
  readonly participants: Map<string, Participant>;
  readonly callStatus: CallStatus | null;
  readonly links: Map<string, PeerLink>;
  on<E extends keyof CallEvents>(event: E, handler: (value: CallEvents[E]) => void): () => void;
  off<E extends keyof CallEvents>(event: E, handler: (value: CallEvents[E]) => void): void;
  once<E extends keyof CallEvents>(event: E): Promise<CallEvents[E]>;
  join(roomId: string, options?: JoinOptions): Promise<Joined>;
  lobby(lobbyId: string, options?: LobbyOptions): Promise<Joined>;
  leaveLobby(lobbyId: string): boolean;
  mute(muted?: boolean): Promise<unknown>;
  setVideo(enabled: boolean): Promise<unknown>;
  shareScreen(on?: boolean): Promise<unknown>;
  control(action: string): Promise<unknown>;
  sendChat(text: string): Promise<unknown>;
  sendOverlay(overlay: Overlay): Promise<unknown>;
  snapshot(peerId: string, options?: { subject?: string }): Promise<{ jobId: string; state: string }>;
  report(reportId: string): Promise<Record<string, unknown>>;
  evidence(cid: string): Promise<Blob>;
  end(): Promise<unknown>;
  appointments(): Promise<Appointment[]>;
  appointment(id: string): Promise<Appointment>;
  book(booking: { hostId: string; guestIds: string[]; start: string | Date; online?: boolean; description?: string }): Promise<Appointment>;
  appointmentStep(id: string, step: "confirm" | "start" | "end" | "cancel"): Promise<Appointment>;
  notifications(limit?: number): Promise<{ notifications: Notification[]; unread: number }>;
  readNotification(id: string): Promise<Notification>;
  leave(): Promise<void>;
  close(): void;
}

export class PeerLink {
  readonly selfId: string;
  readonly peerId: string;
  readonly pc: RTCPeerConnection;
  readonly polite: boolean;
  readonly remoteStream: MediaStream | null;
  constructor(o: {
    selfId: string;
    peerId: string;
    pc: RTCPeerConnection;
    signal: (msg: object) => void;
    onError?: (e: unknown) => void;
  });
  handleDescription(type: "offer" | "answer", sdp: string): Promise<"applied" | "ignored">;
  handleCandidate(candidate: RTCIceCandidateInit): Promise<void>;
  restartIce(): void;
  close(): void;
}

export const Switchboard: {
  connect(options: ConnectOptions): Promise<Call>;
};

export function signalingUrl(base: string, token: string): string;
export function backoffDelay(attempt: number, schedule: { initialMs: number; maxMs: number }, random?: () => number): number;
export function summarizeStats(report: RTCStatsReport): {
  roundTripTime: number;
  fractionLost: number;
  jitter: number;
  availableOutgoingBitrate?: number;
} | null;
export function grabFrame(stream: MediaStream): Promise<Blob>;
