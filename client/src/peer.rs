//! A real WebRTC peer (the `webrtc` crate) signaling through Switchboard: the peer connection,
//! set up for loopback or for the ICE servers a room hands out, turns what it produces (offers,
//! answers, trickled candidates) into protocol messages for the caller to send, and applies the
//! offers, answers and candidates the caller receives (an offer is answered, a candidate that
//! comes before its description waits for it). How messages travel (a [`Client`](crate::Client),
//! a raw connection, a test's own loop) is the caller's business: this is the one place the
//! negotiation lives. Feature `webrtc`.
//!
//! ```no_run
//! # async fn example() -> Result<(), switchboard_client::peer::PeerError> {
//! use switchboard_client::peer::{Peer, PeerOptions};
//! let (peer, mut events) = Peer::new(Some("bob's peer id".into()), PeerOptions::loopback()).await?;
//! let channel = peer.pc.create_data_channel("chat", None).await?;
//! peer.offer().await?;
//! while let Some(message) = events.signaling.recv().await {
//!     // send `message` (an offer or a candidate for Bob) over the signaling connection
//! #   let _ = message;
//! }
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```

use rtc::ice::{mdns::MulticastDnsMode, network_type::NetworkType};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::*;

/// What went wrong with a peer: the WebRTC stack refused something, a signaling message could
/// not be read, or no answer came.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PeerError(String);

impl From<webrtc::error::Error> for PeerError {
    fn from(e: webrtc::error::Error) -> PeerError {
        PeerError(format!("webrtc: {e}"))
    }
}

impl From<serde_json::Error> for PeerError {
    fn from(e: serde_json::Error) -> PeerError {
        PeerError(format!("unreadable signaling: {e}"))
    }
}

impl From<String> for PeerError {
    fn from(e: String) -> PeerError {
        PeerError(e)
    }
}

impl From<&str> for PeerError {
    fn from(e: &str) -> PeerError {
        PeerError(e.to_owned())
    }
}

/// How a peer reaches the other.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// STUN and TURN servers.
    pub ice_servers: Vec<RTCIceServer>,
    /// Gather and use relay candidates only (`RTCIceTransportPolicy::Relay`).
    pub relay_only: bool,
    /// The UDP addresses to gather on (`127.0.0.1:0` when empty).
    pub udp_addrs: Vec<String>,
}

impl PeerOptions {
    /// Host candidates on 127.0.0.1, no ICE server: two peers on one machine.
    pub fn loopback() -> PeerOptions {
        PeerOptions::default()
    }

    /// Relay candidates only, through these ICE servers (`iceServers` as Switchboard sends
    /// them in `joined`).
    pub fn relay_through(ice_servers: &Value) -> Result<PeerOptions, PeerError> {
        let servers = ice_servers.as_array().ok_or_else(|| format!("iceServers is not an array: {ice_servers}"))?;
        let ice_servers = servers
            .iter()
            .map(|s| {
                Ok(RTCIceServer {
                    urls: serde_json::from_value(s["urls"].clone())?,
                    username: s["username"].as_str().unwrap_or_default().to_owned(),
                    credential: s["credential"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, PeerError>>()?;
        Ok(PeerOptions { ice_servers, relay_only: true, udp_addrs: Vec::new() })
    }
}

/// What a peer puts out: messages to send, and the peer connection's news.
pub struct PeerEvents {
    /// Every message the peer wants sent, in order: offers, answers and candidates, ready for
    /// the signaling connection.
    pub signaling: UnboundedReceiver<Value>,
    /// Once per time the connection reaches `connected`.
    pub connected: UnboundedReceiver<()>,
    /// Data channels the other side opened.
    pub channels: UnboundedReceiver<Arc<dyn DataChannel>>,
    /// Tracks the other side sends.
    pub tracks: UnboundedReceiver<Arc<dyn TrackRemote>>,
}

/// A WebRTC peer connection and its signaling state.
pub struct Peer {
    /// The peer connection, for tracks, data channels and statistics.
    pub pc: Arc<dyn PeerConnection>,
    target: Option<String>,
    outgoing: UnboundedSender<Value>,
    /// Candidates that came before the description they belong to.
    early: Mutex<Vec<RTCIceCandidateInit>>,
    gathered: Arc<Mutex<Vec<String>>>,
}

/// Callbacks run on the connection's driver task: they only forward to channels.
struct Handler {
    target: Option<String>,
    outgoing: UnboundedSender<Value>,
    gathered: Arc<Mutex<Vec<String>>>,
    connected: UnboundedSender<()>,
    channels: UnboundedSender<Arc<dyn DataChannel>>,
    tracks: UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        lock(&self.gathered).push(ev.candidate.address.clone());
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.outgoing.send(addressed(&self.target, json!({"type": "ice-candidate", "candidate": init})));
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        if s == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(());
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(t);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `message` with `peerId` set to the target, when there is one.
fn addressed(target: &Option<String>, mut message: Value) -> Value {
    if let Some(t) = target {
        message["peerId"] = json!(t);
    }
    message
}

impl Peer {
    /// A peer whose messages go to session `target` (`None`: the caller addresses them), and
    /// what it puts out.
    pub async fn new(target: Option<String>, options: PeerOptions) -> Result<(Peer, PeerEvents), PeerError> {
        let (outgoing, signaling) = unbounded_channel();
        let (connected_tx, connected) = unbounded_channel();
        let (channels_tx, channels) = unbounded_channel();
        let (tracks_tx, tracks) = unbounded_channel();
        let gathered = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Handler {
            target: target.clone(),
            outgoing: outgoing.clone(),
            gathered: gathered.clone(),
            connected: connected_tx,
            channels: channels_tx,
            tracks: tracks_tx,
        });
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(vec![NetworkType::Udp4])
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .build();
        let policy = if options.relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(options.ice_servers)
            .with_ice_transport_policy(policy)
            .build();
        let addrs = if options.udp_addrs.is_empty() { vec!["127.0.0.1:0".to_owned()] } else { options.udp_addrs };
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(configuration)
                .with_media_engine(media)
                .with_setting_engine(settings)
                .with_handler(handler)
                .with_udp_addrs(addrs)
                .build()
                .await?,
        );
        let events = PeerEvents { signaling, connected, channels, tracks };
        Ok((Peer { pc, target, outgoing, early: Mutex::new(Vec::new()), gathered }, events))
    }

    /// Starts a negotiation: creates an offer, applies it and hands it out to be sent.
    pub async fn offer(&self) -> Result<(), PeerError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        self.send(json!({"type": "offer", "sdp": offer.sdp}))
    }

    /// One offer/answer round started here: returns once the answer is applied, or fails
    /// after `wait`.
    pub async fn negotiate(&self, wait: Duration) -> Result<(), PeerError> {
        self.offer().await?;
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.pc.pending_local_description().await.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!("no answer within {wait:?}").into())
    }

    /// Applies a message from the other side: an offer is applied and answered, an answer
    /// applied, a candidate added (or kept until there is a remote description). Other
    /// messages are not a peer's and are ignored; `Ok(true)` when the message was one.
    pub async fn apply(&self, message: &Value) -> Result<bool, PeerError> {
        match message["type"].as_str() {
            Some(kind @ ("offer" | "answer")) => {
                let desc: RTCSessionDescription = serde_json::from_value(json!({"type": kind, "sdp": message["sdp"]}))?;
                let is_offer = desc.sdp_type == RTCSdpType::Offer;
                self.pc.set_remote_description(desc).await?;
                let early: Vec<RTCIceCandidateInit> = lock(&self.early).drain(..).collect();
                for c in early {
                    self.pc.add_ice_candidate(c).await?;
                }
                if is_offer {
                    let answer = self.pc.create_answer(None).await?;
                    self.pc.set_local_description(answer.clone()).await?;
                    self.send(json!({"type": "answer", "sdp": answer.sdp}))?;
                }
                Ok(true)
            }
            Some("ice-candidate") => {
                let candidate: RTCIceCandidateInit = serde_json::from_value(message["candidate"].clone())?;
                if self.pc.remote_description().await.is_none() {
                    lock(&self.early).push(candidate);
                } else {
                    self.pc.add_ice_candidate(candidate).await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The addresses of the candidates gathered so far.
    pub fn gathered(&self) -> Vec<String> {
        lock(&self.gathered).clone()
    }

    /// The candidate types of the pair the connection selected (local, remote), from its
    /// statistics.
    pub async fn selected_pair(&self) -> Result<(RTCIceCandidateType, RTCIceCandidateType), PeerError> {
        use rtc::statistics::report::RTCStatsReportEntry as Entry;
        let report = self.pc.get_stats(std::time::Instant::now(), StatsSelector::None).await;
        let transport = report.transport().ok_or("no transport statistics")?;
        let Some(Entry::IceCandidatePair(pair)) = report.get(&transport.selected_candidate_pair_id) else {
            return Err(format!("no selected candidate pair ({:?})", transport.selected_candidate_pair_id).into());
        };
        // The pair names its candidates by their ICE ids; the report keys them with a prefix.
        let kind = |prefix: &str, id: &str| match report.get(id).or_else(|| report.get(&format!("{prefix}{id}"))) {
            Some(Entry::LocalCandidate(c) | Entry::RemoteCandidate(c)) => Ok(c.candidate_type),
            _ => Err(PeerError(format!("candidate {id} is not in the report"))),
        };
        Ok((
            kind("RTCLocalIceCandidate_", &pair.local_candidate_id)?,
            kind("RTCRemoteIceCandidate_", &pair.remote_candidate_id)?,
        ))
    }

    fn send(&self, message: Value) -> Result<(), PeerError> {
        self.outgoing
            .send(addressed(&self.target, message))
            .map_err(|_| PeerError::from("the peer's messages are no longer read"))
    }
}
