//! Two real WebRTC peers (the `webrtc` crate) calling each other through a running Switchboard:
//! they exchange their offer, answer and trickled ICE candidates over the signaling socket, open
//! a data channel and talk both ways, and can renegotiate on the live connection. Peers bind and
//! gather on 127.0.0.1 only. By default they use no ICE server; [`PeerOptions`] gives them TURN
//! servers and can restrict them to relay candidates.

use crate::support::{Client, WAIT};
use anyhow::{Result, anyhow, ensure};
use futures_util::{SinkExt, StreamExt};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
pub use switchboard_client::peer::PeerOptions;
use switchboard_client::peer::{Peer, PeerEvents};
use tokio::sync::mpsc::UnboundedReceiver as Rx;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::*;

/// A peer with its signaling loop over the test's connection.
struct Signaled {
    peer: Arc<Peer>,
    connected: Rx<()>,
    channels: Rx<Arc<dyn DataChannel>>,
    tracks: Rx<Arc<dyn TrackRemote>>,
    signaling: tokio::task::JoinHandle<Result<()>>,
}

async fn peer(client: Client, target: &str, options: PeerOptions) -> Result<Signaled> {
    let (peer, events) = Peer::new(Some(target.to_owned()), options).await?;
    let PeerEvents { signaling: outgoing, connected, channels, tracks } = events;
    let peer = Arc::new(peer);
    let loop_ = signal(peer.clone(), client, outgoing, target.to_owned());
    let signaling = tokio::spawn(async move {
        let result = loop_.await;
        if let Err(e) = &result {
            eprintln!("signaling loop failed: {e:#}");
        }
        result
    });
    Ok(Signaled { peer, connected, channels, tracks, signaling })
}

/// The peer's signaling client: sends what the peer produces, applies what arrives, and checks
/// that only the partner's SDP and only loopback candidates come.
async fn signal(peer: Arc<Peer>, client: Client, mut outgoing: Rx<Value>, target: String) -> Result<()> {
    let mut ws = client.ws.into_inner();
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
                    }
                    Some("ice-candidate") => {
                        let candidate = v["candidate"]["candidate"].as_str().unwrap_or_default();
                        let addr = candidate.split_whitespace().nth(4).unwrap_or("127.0.0.1");
                        ensure!(addr == "127.0.0.1", "non-loopback candidate relayed: {candidate}");
                    }
                    // The room of an acknowledged message is being re-homed: the edge sends it again.
                    Some("error") if v["code"] == "room_unavailable" && !v["ref"].is_null() => continue,
                    Some("error") => return Err(anyhow!("server error: {v}")),
                    _ => continue,
                }
                peer.apply(&v).await?;
            }
        }
    }
}

/// One offer/answer round started by `p`; returns once the answer is applied.
async fn negotiate(p: &Signaled) -> Result<()> {
    Ok(p.peer.negotiate(Duration::from_secs(10)).await?)
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
    a: Signaled,
    b: Signaled,
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
    let dc_a = a.peer.pc.create_data_channel("chat", None).await?;
    negotiate(&a).await?;
    timeout(WAIT, a.connected.recv()).await?.ok_or(anyhow!("A never connected"))?;
    timeout(WAIT, b.connected.recv()).await?.ok_or(anyhow!("B never connected"))?;
    next_event(&dc_a, true).await?;
    let dc_b = timeout(WAIT, b.channels.recv()).await?.ok_or(anyhow!("no data channel on B"))?;
    exchange(&dc_a, &dc_b, "hello from alice", "hello from bob").await?;
    Ok(Call { a, b, dc_a, dc_b })
}

impl Call {
    /// The types of the candidates of the pair each side has selected: `[(local, remote) of
    /// Alice, (local, remote) of Bob]`.
    pub async fn selected_pairs(&self) -> Result<[(RTCIceCandidateType, RTCIceCandidateType); 2]> {
        Ok([self.a.peer.selected_pair().await?, self.b.peer.selected_pair().await?])
    }

    /// Renegotiation on the live connection: Alice adds an audio track and offers again; Bob
    /// must see the track.
    pub async fn renegotiate_with_audio(&mut self) -> Result<()> {
        let track = audio_track();
        self.a.peer.pc.add_track(track.clone()).await?;
        negotiate(&self.a).await?;
        let answer = self.a.peer.pc.remote_description().await.ok_or(anyhow!("no answer"))?;
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
            let gathered = p.peer.gathered();
            ensure!(!gathered.is_empty() && gathered.iter().all(|x| x == "127.0.0.1"), "gathered {gathered:?}");
        }
        ensure!(!self.a.signaling.is_finished() && !self.b.signaling.is_finished(), "a signaling loop ended early");
        self.a.peer.pc.close().await?;
        self.b.peer.pc.close().await?;
        self.a.signaling.abort();
        self.b.signaling.abort();
        Ok(())
    }
}
