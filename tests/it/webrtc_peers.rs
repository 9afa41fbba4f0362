//! Two real WebRTC peers (the `webrtc` crate) calling each other through a running Switchboard:
//! they exchange their offer, answer and trickled ICE candidates over the signaling socket, open
//! a data channel and talk both ways, and can renegotiate on the live connection. Peers bind and
//! gather on 127.0.0.1 only. By default they use no ICE server; [`PeerOptions`] gives them TURN
//! servers and can restrict them to relay candidates.

use crate::support::{Client, WAIT};
use anyhow::{Result, anyhow, ensure};
use futures_util::{SinkExt, StreamExt};
use rtc::ice::{mdns::MulticastDnsMode, network_type::NetworkType};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver as Rx, UnboundedSender as Tx, unbounded_channel};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::*;

/// How a peer reaches the other.
#[derive(Clone, Default)]
pub struct PeerOptions {
    /// STUN and TURN servers.
    pub ice_servers: Vec<RTCIceServer>,
    /// Gather and use relay candidates only (`RTCIceTransportPolicy::Relay`).
    pub relay_only: bool,
}

impl PeerOptions {
    /// Relay candidates only, through these ICE servers (`iceServers` as Switchboard sends them).
    pub fn relay_through(ice_servers: &Value) -> Result<PeerOptions> {
        let servers = ice_servers.as_array().ok_or(anyhow!("iceServers is not an array: {ice_servers}"))?;
        let ice_servers = servers
            .iter()
            .map(|s| {
                Ok(RTCIceServer {
                    urls: serde_json::from_value(s["urls"].clone())?,
                    username: s["username"].as_str().unwrap_or_default().to_owned(),
                    credential: s["credential"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PeerOptions { ice_servers, relay_only: true })
    }
}

/// Peer callbacks run on the connection's driver task: they only forward to channels.
struct Handler {
    target: String,
    to_server: Tx<Value>,
    gathered: Mutex<Vec<String>>,
    connected: Tx<()>,
    channels: Tx<Arc<dyn DataChannel>>,
    tracks: Tx<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        self.gathered.lock().expect("lock").push(ev.candidate.address.clone());
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.to_server.send(json!({"type": "ice-candidate", "peerId": self.target, "candidate": init}));
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

struct Peer {
    pc: Arc<dyn PeerConnection>,
    handler: Arc<Handler>,
    to_server: Tx<Value>,
    connected: Rx<()>,
    channels: Rx<Arc<dyn DataChannel>>,
    tracks: Rx<Arc<dyn TrackRemote>>,
    signaling: tokio::task::JoinHandle<Result<()>>,
}

async fn peer(client: Client, target: &str, options: PeerOptions) -> Result<Peer> {
    let (to_server, outgoing) = unbounded_channel();
    let (connected_tx, connected) = unbounded_channel();
    let (channels_tx, channels) = unbounded_channel();
    let (tracks_tx, tracks) = unbounded_channel();
    let handler = Arc::new(Handler {
        target: target.to_owned(),
        to_server: to_server.clone(),
        gathered: Mutex::new(Vec::new()),
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
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(configuration(options))
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_handler(handler.clone())
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?,
    );
    let loop_ = signal(pc.clone(), client, outgoing, to_server.clone(), target.to_owned());
    let signaling = tokio::spawn(async move {
        let result = loop_.await;
        if let Err(e) = &result {
            eprintln!("signaling loop failed: {e:#}");
        }
        result
    });
    Ok(Peer { pc, handler, to_server, connected, channels, tracks, signaling })
}

fn configuration(options: PeerOptions) -> RTCConfiguration {
    let policy = if options.relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    RTCConfigurationBuilder::new().with_ice_servers(options.ice_servers).with_ice_transport_policy(policy).build()
}

/// The peer's signaling client: sends what the peer produces, applies what arrives.
async fn signal(
    pc: Arc<dyn PeerConnection>,
    client: Client,
    mut outgoing: Rx<Value>,
    to_server: Tx<Value>,
    target: String,
) -> Result<()> {
    let mut ws = client.ws.into_inner();
    let mut early: Vec<RTCIceCandidateInit> = Vec::new();
    // Every frame carries an id, so the edge keeps it until the room acknowledges it and
    // sends it again if the room moves.
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            out = outgoing.recv() => {
                let Some(mut frame) = out else { return Ok(()) };
                frame["id"] = json!(next_id);
                next_id += 1;
                ws.send(Message::text(frame.to_string())).await?;
            }
            incoming = ws.next() => {
                let Some(frame) = incoming else { return Ok(()) };
                let Message::Text(text) = frame? else { continue };
                let v: Value = serde_json::from_str(&text)?;
                match v["type"].as_str() {
                    Some("offer" | "answer") => {
                        ensure!(v["peerId"] == target.as_str(), "SDP from an unexpected peer: {v}");
                        let desc: RTCSessionDescription = serde_json::from_value(json!({"type": v["type"], "sdp": v["sdp"]}))?;
                        let is_offer = desc.sdp_type == RTCSdpType::Offer;
                        pc.set_remote_description(desc).await?;
                        for c in early.drain(..) {
                            pc.add_ice_candidate(c).await?;
                        }
                        if is_offer {
                            let answer = pc.create_answer(None).await?;
                            pc.set_local_description(answer.clone()).await?;
                            to_server.send(json!({"type": "answer", "peerId": target, "sdp": answer.sdp}))?;
                        }
                    }
                    Some("ice-candidate") => {
                        let cand: RTCIceCandidateInit = serde_json::from_value(v["candidate"].clone())?;
                        let addr = cand.candidate.split_whitespace().nth(4).unwrap_or("127.0.0.1");
                        ensure!(addr == "127.0.0.1", "non-loopback candidate relayed: {}", cand.candidate);
                        if pc.remote_description().await.is_none() {
                            early.push(cand);
                        } else {
                            pc.add_ice_candidate(cand).await?;
                        }
                    }
                    // The room of an acknowledged message is being re-homed: the edge sends it again.
                    Some("error") if v["code"] == "room_unavailable" && !v["ref"].is_null() => {}
                    Some("error") => return Err(anyhow!("server error: {v}")),
                    _ => {}
                }
            }
        }
    }
}

/// One offer/answer round started by `p`; returns once the answer is applied.
async fn negotiate(p: &Peer, target: &str) -> Result<()> {
    let offer = p.pc.create_offer(None).await?;
    p.pc.set_local_description(offer.clone()).await?;
    p.to_server.send(json!({"type": "offer", "peerId": target, "sdp": offer.sdp}))?;
    for _ in 0..2000 {
        if p.pc.pending_local_description().await.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(anyhow!("no answer within 10 s"))
}

async fn next_event(dc: &Arc<dyn DataChannel>, want_open: bool) -> Result<String> {
    timeout(WAIT, async {
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen if want_open => return Ok(String::new()),
                DataChannelEvent::OnMessage(m) if !want_open => return Ok(String::from_utf8(m.data.to_vec())?),
                _ => {}
            }
        }
        Err(anyhow!("data channel closed"))
    })
    .await?
}

pub async fn exchange(a: &Arc<dyn DataChannel>, b: &Arc<dyn DataChannel>, a_says: &str, b_says: &str) -> Result<()> {
    a.send_text(a_says).await?;
    ensure!(next_event(b, false).await? == a_says, "B got the wrong message");
    b.send_text(b_says).await?;
    ensure!(next_event(a, false).await? == b_says, "A got the wrong message");
    Ok(())
}

fn audio_track() -> Arc<TrackLocalStaticRTP> {
    let codec = RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    let encoding = RTCRtpEncodingParameters {
        codec,
        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(4242), ..Default::default() },
        ..Default::default()
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "s".into(),
        "audio".into(),
        "audio".into(),
        RtpCodecKind::Audio,
        vec![encoding],
    )))
}

/// Alice and Bob (joined, Alice first) set up a real call through the server(s) they are
/// connected to: data channel both ways, then a renegotiation adding audio.
pub async fn call(alice: Client, bob: Client) -> Result<()> {
    let mut call = connect(alice, bob).await?;
    call.renegotiate_with_audio().await?;
    exchange(&call.dc_a, &call.dc_b, "after renegotiation", "still here").await?;
    call.hang_up().await
}

/// A connected call between two peers with an open data channel.
pub struct Call {
    a: Peer,
    b: Peer,
    bob_id: String,
    pub dc_a: Arc<dyn DataChannel>,
    pub dc_b: Arc<dyn DataChannel>,
}

/// Connects Alice and Bob (joined, Alice first): offer, answer, trickled candidates, a data
/// channel open and used both ways.
pub async fn connect(alice: Client, bob: Client) -> Result<Call> {
    connect_with(alice, bob, PeerOptions::default(), PeerOptions::default()).await
}

/// [`connect`], with each peer's ICE options.
pub async fn connect_with(
    mut alice: Client,
    bob: Client,
    alice_options: PeerOptions,
    bob_options: PeerOptions,
) -> Result<Call> {
    let bob_id = alice.recv_type("peer_joined").await["peerId"].as_str().expect("id").to_owned();
    ensure!(bob_id == bob.peer_id, "peer_joined names bob");
    let alice_id = alice.peer_id.clone();

    let mut a = peer(alice, &bob_id, alice_options).await?;
    let mut b = peer(bob, &alice_id, bob_options).await?;

    // Initial negotiation: the data channel puts an application m-line in the offer.
    let dc_a = a.pc.create_data_channel("chat", None).await?;
    negotiate(&a, &bob_id).await?;
    timeout(WAIT, a.connected.recv()).await?.ok_or(anyhow!("A never connected"))?;
    timeout(WAIT, b.connected.recv()).await?.ok_or(anyhow!("B never connected"))?;
    next_event(&dc_a, true).await?;
    let dc_b = timeout(WAIT, b.channels.recv()).await?.ok_or(anyhow!("no data channel on B"))?;
    exchange(&dc_a, &dc_b, "hello from alice", "hello from bob").await?;
    Ok(Call { a, b, bob_id, dc_a, dc_b })
}

impl Call {
    /// The types of the candidates of the pair each side has selected: `[(local, remote) of
    /// Alice, (local, remote) of Bob]`.
    pub async fn selected_pairs(&self) -> Result<[(RTCIceCandidateType, RTCIceCandidateType); 2]> {
        Ok([selected_pair(&self.a.pc).await?, selected_pair(&self.b.pc).await?])
    }

    /// Renegotiation on the live connection: Alice adds an audio track and offers again; Bob
    /// must see the track.
    pub async fn renegotiate_with_audio(&mut self) -> Result<()> {
        let track = audio_track();
        self.a.pc.add_track(track.clone()).await?;
        negotiate(&self.a, &self.bob_id).await?;
        let answer = self.a.pc.remote_description().await.ok_or(anyhow!("no answer"))?;
        ensure!(answer.sdp.contains("m=audio"), "the renegotiated answer has no audio m-line");
        // Opus-sized RTP packets every 20 ms until B has seen the track.
        let writer = tokio::spawn(async move {
            for seq in 0u16..1000 {
                let header = rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 960,
                    ssrc: 4242,
                    ..Default::default()
                };
                let packet = rtc::rtp::packet::Packet { header, payload: bytes::Bytes::from_static(&[0xF8; 60]) };
                let _ = track.write_rtp(packet).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let _remote = timeout(WAIT, self.b.tracks.recv()).await?.ok_or(anyhow!("B saw no track"))?;
        writer.abort();
        Ok(())
    }

    /// Checks that everything stayed on loopback and the signaling loops are alive; closes.
    pub async fn hang_up(self) -> Result<()> {
        for p in [&self.a, &self.b] {
            let gathered = p.handler.gathered.lock().expect("lock").clone();
            ensure!(!gathered.is_empty() && gathered.iter().all(|x| x == "127.0.0.1"), "gathered {gathered:?}");
        }
        ensure!(!self.a.signaling.is_finished() && !self.b.signaling.is_finished(), "a signaling loop ended early");
        self.a.pc.close().await?;
        self.b.pc.close().await?;
        self.a.signaling.abort();
        self.b.signaling.abort();
        Ok(())
    }
}

/// The candidate types of the pair `pc` has selected, from its statistics.
async fn selected_pair(pc: &Arc<dyn PeerConnection>) -> Result<(RTCIceCandidateType, RTCIceCandidateType)> {
    use rtc::statistics::report::RTCStatsReportEntry as Entry;
    let report = pc.get_stats(std::time::Instant::now(), StatsSelector::None).await;
    let transport = report.transport().ok_or(anyhow!("no transport statistics"))?;
    let Some(Entry::IceCandidatePair(pair)) = report.get(&transport.selected_candidate_pair_id) else {
        return Err(anyhow!("no selected candidate pair ({:?})", transport.selected_candidate_pair_id));
    };
    // The pair names its candidates by their ICE ids; the report keys them with a prefix.
    let kind = |prefix: &str, id: &str| match report.get(id).or_else(|| report.get(&format!("{prefix}{id}"))) {
        Some(Entry::LocalCandidate(c) | Entry::RemoteCandidate(c)) => Ok(c.candidate_type),
        _ => Err(anyhow!("candidate {id} is not in the report")),
    };
    Ok((
        kind("RTCLocalIceCandidate_", &pair.local_candidate_id)?,
        kind("RTCRemoteIceCandidate_", &pair.remote_candidate_id)?,
    ))
}
