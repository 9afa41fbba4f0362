//! Real WebRTC calls (the `webrtc` crate) through the cluster under test: two peers signal
//! through chaos [`client`](crate::client)s, open a data channel and keep sending on it both
//! ways through every fault (media is peer to peer; the server only carries signaling). After
//! each fault the offerer renegotiates, which needs signaling to be back. Peers bind and
//! gather on 127.0.0.1 only.

use crate::client::AppLink;
use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use switchboard_client::peer::{PeerEvents, PeerOptions};
use tokio::sync::mpsc::{UnboundedReceiver as Rx, UnboundedSender as Tx};
use tokio::time::timeout;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

const WAIT: Duration = Duration::from_secs(15);

struct Peer {
    peer: Arc<switchboard_client::peer::Peer>,
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
        let dc_a = a.peer.pc.create_data_channel("chaos", None).await?;
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
        let _ = self.a.peer.pc.close().await;
        let _ = self.b.peer.pc.close().await;
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

/// A peer on loopback whose signaling goes through the chaos client's link (which addresses
/// it to the partner and numbers it).
async fn peer(link: AppLink) -> Result<PeerParts> {
    let (peer, events) = switchboard_client::peer::Peer::new(None, PeerOptions::loopback()).await?;
    let PeerEvents { signaling: produced, connected, channels, .. } = events;
    let peer = Arc::new(peer);
    let signaling = tokio::spawn(carry_signaling(peer.clone(), produced, link.incoming, link.outgoing));
    Ok((Peer { peer, signaling }, connected, channels))
}

/// Sends what the peer produces, applies what the partner sends.
async fn carry_signaling(
    peer: Arc<switchboard_client::peer::Peer>,
    mut produced: Rx<Value>,
    mut incoming: Rx<Value>,
    to_server: Tx<Value>,
) {
    loop {
        tokio::select! {
            out = produced.recv() => {
                let Some(v) = out else { return };
                if to_server.send(v).is_err() {
                    return;
                }
            }
            v = incoming.recv() => {
                let Some(v) = v else { return };
                if let Err(e) = peer.apply(&v).await {
                    eprintln!("chaos: a WebRTC peer could not apply {}: {e:#}", v["type"]);
                }
            }
        }
    }
}

/// One offer/answer round started by `p`; returns once the answer is applied.
async fn negotiate(p: &Peer) -> Result<()> {
    Ok(p.peer.negotiate(WAIT).await?)
}
