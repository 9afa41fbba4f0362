//! Real WebRTC calls (the `webrtc` crate) through the cluster under test: two peers signal
//! through chaos [`client`](crate::client)s, open a data channel and keep sending on it both
//! ways through every fault (media is peer to peer; the server only carries signaling). After
//! each fault the offerer renegotiates, which needs signaling to be back. Peers bind and
//! gather on 127.0.0.1 only.

use crate::client::AppLink;
use anyhow::{Result, anyhow};
use rtc::ice::{mdns::MulticastDnsMode, network_type::NetworkType};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver as Rx, UnboundedSender as Tx, unbounded_channel};
use tokio::time::timeout;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::*;

const WAIT: Duration = Duration::from_secs(15);

/// Callbacks only forward to channels (they run on the connection's driver task).
struct Handler {
    to_server: Tx<Value>,
    connected: Tx<()>,
    channels: Tx<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(init) = ev.candidate.to_json() {
            let _ = self.to_server.send(json!({"type": "ice-candidate", "candidate": init}));
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
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    to_server: Tx<Value>,
    signaling: tokio::task::JoinHandle<()>,
}

/// Counters of one direction of the data channel.
#[derive(Default)]
struct Direction {
    sent: AtomicU64,
    received: AtomicU64,
    out_of_order: AtomicU64,
}

/// What a call went through.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub renegotiations: u64,
    pub renegotiations_failed: u64,
    pub dc_sent: [u64; 2],
    pub dc_received: [u64; 2],
    pub dc_out_of_order: u64,
    pub dc_closed: bool,
    pub last_error: Option<String>,
}

/// A connected call.
pub struct Call {
    a: Peer,
    b: Peer,
    directions: Arc<[Direction; 2]>,
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    renegotiations: u64,
    renegotiations_failed: u64,
    last_error: Option<String>,
}

impl Call {
    /// Connects the two clients' peers: offer from A with a data channel, open both ways,
    /// then both sides send a numbered message every 100 ms.
    pub async fn start(a_link: AppLink, b_link: AppLink) -> Result<Call> {
        let (a, mut a_connected, _a_channels) = peer(a_link).await?;
        let (b, mut b_connected, mut b_channels) = peer(b_link).await?;
        let dc_a = a.pc.create_data_channel("chaos", None).await?;
        negotiate(&a).await?;
        timeout(WAIT, a_connected.recv()).await?.ok_or(anyhow!("A never connected"))?;
        timeout(WAIT, b_connected.recv()).await?.ok_or(anyhow!("B never connected"))?;
        timeout(WAIT, async {
            while let Some(ev) = dc_a.poll().await {
                if matches!(ev, DataChannelEvent::OnOpen) {
                    return Ok(());
                }
            }
            Err(anyhow!("data channel closed before it opened"))
        })
        .await??;
        let dc_b = timeout(WAIT, b_channels.recv()).await?.ok_or(anyhow!("no data channel on B"))?;
        let directions: Arc<[Direction; 2]> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, (from, to)) in [(dc_a.clone(), dc_b.clone()), (dc_b, dc_a)].into_iter().enumerate() {
            tasks.push(tokio::spawn(send_numbers(from, directions.clone(), i, stop.clone())));
            tasks.push(tokio::spawn(receive_numbers(to, directions.clone(), i, closed.clone())));
        }
        Ok(Call {
            a,
            b,
            directions,
            closed,
            stop,
            tasks,
            renegotiations: 0,
            renegotiations_failed: 0,
            last_error: None,
        })
    }

    /// A new offer from A on the live connection; `Ok` once B's answer is applied.
    pub async fn renegotiate(&mut self) -> Result<()> {
        self.renegotiations += 1;
        let result = negotiate(&self.a).await;
        if let Err(e) = &result {
            self.renegotiations_failed += 1;
            self.last_error = Some(format!("{e:#}"));
        }
        result
    }

    /// Stops sending and waits (bounded) for what is in flight.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..50 {
            if self.directions.iter().all(|d| d.received.load(Ordering::SeqCst) == d.sent.load(Ordering::SeqCst)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn summary(&self) -> Summary {
        let get = |f: fn(&Direction) -> &AtomicU64| [0, 1].map(|i| f(&self.directions[i]).load(Ordering::SeqCst));
        let sent = get(|d| &d.sent);
        let received = get(|d| &d.received);
        let out_of_order = get(|d| &d.out_of_order).iter().sum();
        let dc_closed = self.closed.load(Ordering::SeqCst);
        Summary {
            ok: !dc_closed && out_of_order == 0 && sent == received && self.renegotiations_failed == 0 && sent[0] > 0,
            renegotiations: self.renegotiations,
            renegotiations_failed: self.renegotiations_failed,
            dc_sent: sent,
            dc_received: received,
            dc_out_of_order: out_of_order,
            dc_closed,
            last_error: self.last_error.clone(),
        }
    }

    pub async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.a.pc.close().await;
        let _ = self.b.pc.close().await;
        self.a.signaling.abort();
        self.b.signaling.abort();
    }
}

async fn send_numbers(dc: Arc<dyn DataChannel>, directions: Arc<[Direction; 2]>, i: usize, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if dc.send_text(&n.to_string()).await.is_err() {
            return;
        }
        n += 1;
        directions[i].sent.store(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn receive_numbers(dc: Arc<dyn DataChannel>, directions: Arc<[Direction; 2]>, i: usize, closed: Arc<AtomicBool>) {
    while let Some(ev) = dc.poll().await {
        match ev {
            DataChannelEvent::OnMessage(m) => {
                let got: Option<u64> = std::str::from_utf8(&m.data).ok().and_then(|s| s.parse().ok());
                let d = &directions[i];
                if got != Some(d.received.load(Ordering::SeqCst)) {
                    d.out_of_order.fetch_add(1, Ordering::SeqCst);
                }
                d.received.fetch_add(1, Ordering::SeqCst);
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    closed.store(true, Ordering::SeqCst);
}

type PeerParts = (Peer, Rx<()>, Rx<Arc<dyn DataChannel>>);

async fn peer(link: AppLink) -> Result<PeerParts> {
    let (connected_tx, connected) = unbounded_channel();
    let (channels_tx, channels) = unbounded_channel();
    let to_server = link.outgoing.clone();
    let handler = Arc::new(Handler { to_server: to_server.clone(), connected: connected_tx, channels: channels_tx });
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4])
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .build();
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?,
    );
    let signaling = tokio::spawn(apply_signaling(pc.clone(), link.incoming, to_server.clone()));
    Ok((Peer { pc, to_server, signaling }, connected, channels))
}

/// Applies what the partner sends: offers are answered, answers applied, candidates added
/// (held until there is a remote description).
async fn apply_signaling(pc: Arc<dyn PeerConnection>, mut incoming: Rx<Value>, to_server: Tx<Value>) {
    let mut early: Vec<RTCIceCandidateInit> = Vec::new();
    while let Some(v) = incoming.recv().await {
        let outcome: Result<()> = async {
            match v["type"].as_str() {
                Some("offer" | "answer") => {
                    let desc: RTCSessionDescription =
                        serde_json::from_value(json!({"type": v["type"], "sdp": v["sdp"]}))?;
                    let is_offer = desc.sdp_type == RTCSdpType::Offer;
                    pc.set_remote_description(desc).await?;
                    for c in early.drain(..) {
                        pc.add_ice_candidate(c).await?;
                    }
                    if is_offer {
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer.clone()).await?;
                        to_server.send(json!({"type": "answer", "sdp": answer.sdp}))?;
                    }
                }
                Some("ice-candidate") => {
                    let cand: RTCIceCandidateInit = serde_json::from_value(v["candidate"].clone())?;
                    if pc.remote_description().await.is_none() {
                        early.push(cand);
                    } else {
                        pc.add_ice_candidate(cand).await?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            eprintln!("chaos: a WebRTC peer could not apply {}: {e:#}", v["type"]);
        }
    }
}

/// One offer/answer round started by `p`; returns once the answer is applied.
async fn negotiate(p: &Peer) -> Result<()> {
    let offer = p.pc.create_offer(None).await?;
    p.pc.set_local_description(offer.clone()).await?;
    p.to_server.send(json!({"type": "offer", "sdp": offer.sdp}))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if p.pc.pending_local_description().await.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(anyhow!("no answer within {WAIT:?}"))
}
