//! The listener's guard: a packet `Conn` between a socket (UDP, or the TCP clients) and
//! `turn`'s server that looks at each authenticated request before the server does.
//!
//! `turn` 0.17's server has no hooks for what Switchboard needs, so the guard adds them:
//! - an Allocate whose credential has expired is refused here (401), the only place that
//!   knows the method (the server asks its auth handler for a key without saying why);
//! - failed credentials are counted: the server checks the message integrity itself after
//!   asking for the key and tells nobody when it fails;
//! - a CreatePermission or ChannelBind towards a peer the policy refuses is answered 403;
//! - an Allocate beyond the user's quota is answered 486, and the server's answers to
//!   Allocate and Refresh tell the quota which allocations live ([`Quota`]).
//!
//! Everything else (ChannelData, indications, unauthenticated requests) passes untouched; bytes
//! that are neither STUN nor ChannelData are dropped, and no received byte can make it panic.

use super::auth::{Refusal, SharedSecret};
use super::peers::PeerPolicy;
use super::quota::Quota;
use ::turn::proto::chandata::ChannelData;
use ::turn::proto::lifetime::Lifetime;
use ::turn::proto::peeraddr::PeerAddress;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use webrtc_util::Conn;

/// What the guard does with one received packet.
enum Verdict {
    /// Hand it to the server.
    Pass,
    /// Neither STUN nor ChannelData: nobody would understand it.
    Drop,
    /// Answer it here with this response.
    Answer(Vec<u8>),
}

/// The guard around one listener's socket.
pub struct Guard {
    inner: Arc<dyn Conn + Send + Sync>,
    /// Which listener this is (UDP 0, TCP 1): client addresses are per listener.
    listener: u8,
    auth: Arc<SharedSecret>,
    realm: String,
    peers: PeerPolicy,
    quota: Arc<Quota>,
}

impl Guard {
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        listener: u8,
        auth: Arc<SharedSecret>,
        realm: &str,
        peers: PeerPolicy,
        quota: Arc<Quota>,
    ) -> Guard {
        Guard { inner, listener, auth, realm: realm.to_owned(), peers, quota }
    }

    fn inspect(&self, packet: &[u8], from: SocketAddr) -> Verdict {
        // Media (ChannelData) is the hot path: it needs no look.
        if ChannelData::is_channel_data(packet) {
            return Verdict::Pass;
        }
        if !stun::message::is_message(packet) {
            return Verdict::Drop;
        }
        let mut m = Message { raw: packet.to_vec(), ..Message::default() };
        if m.decode().is_err() {
            return Verdict::Drop;
        }
        if m.typ.class != CLASS_REQUEST || !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Verdict::Pass;
        }
        let (Ok(username), Ok(realm)) =
            (TextAttribute::get_from_as(&m, ATTR_USERNAME), TextAttribute::get_from_as(&m, ATTR_REALM))
        else {
            // The server answers 400 for a request that lacks them.
            return Verdict::Pass;
        };
        let (username, realm) = (username.text, realm.text);
        let key = match self.auth.key(&username, &realm) {
            Ok(key) => key,
            Err(refusal) => {
                refused(refusal);
                return Verdict::Pass;
            }
        };
        if MessageIntegrity(key.clone()).check(&mut m.clone()).is_err() {
            refused(Refusal::Password);
            return Verdict::Pass;
        }
        if m.typ.method == METHOD_ALLOCATE
            && let Err(refusal) = SharedSecret::current(&username, crate::auth::unix_now())
        {
            refused(refusal);
            tracing::debug!(%username, "turn allocation refused: credential expired");
            let realm = TextAttribute::new(ATTR_REALM, self.realm.clone());
            return self.answer(&m, CODE_UNAUTHORIZED, "credential expired", vec![Box::new(realm)]);
        }
        if m.typ.method == METHOD_ALLOCATE {
            let user = username.split_once(':').map_or(username.as_str(), |(_, user)| user);
            if !self.quota.ask((self.listener, from), user, std::time::Instant::now()) {
                metrics::counter!("switchboard_turn_quota_refusals_total").increment(1);
                tracing::debug!(%user, "turn allocation refused: the user holds its quota");
                let integrity = MessageIntegrity(key);
                return self.answer(
                    &m,
                    CODE_ALLOC_QUOTA_REACHED,
                    "allocation quota reached",
                    vec![Box::new(integrity), Box::new(FINGERPRINT)],
                );
            }
        }
        if (m.typ.method == METHOD_CREATE_PERMISSION || m.typ.method == METHOD_CHANNEL_BIND)
            && let Some(peer) = self.refused_peer(&m)
        {
            metrics::counter!("switchboard_turn_peers_denied_total").increment(1);
            tracing::debug!(%peer, "turn permission refused for a peer outside the relay policy");
            // A response to an authenticated request carries its integrity (RFC 5389 §10.2.2).
            let integrity = MessageIntegrity(key);
            return self.answer(
                &m,
                CODE_FORBIDDEN,
                "peer not allowed",
                vec![Box::new(integrity), Box::new(FINGERPRINT)],
            );
        }
        Verdict::Pass
    }

    /// The first XOR-PEER-ADDRESS of `m` that the policy refuses (an undecodable one counts
    /// as refused: the server would not relay to it either).
    fn refused_peer(&self, m: &Message) -> Option<String> {
        for attr in m.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS) {
            // Each attribute alone, in a message with the same transaction id (IPv6 peer
            // addresses are XORed with it).
            let mut one = Message { transaction_id: m.transaction_id, ..Message::default() };
            one.add(ATTR_XOR_PEER_ADDRESS, &attr.value);
            let mut peer = PeerAddress::default();
            if peer.get_from(&one).is_err() {
                return Some("(undecodable)".into());
            }
            if !self.peers.allows(peer.ip) {
                return Some(peer.ip.to_string());
            }
        }
        None
    }

    /// An error response to `m`, or nothing if it cannot be built (the client then times out,
    /// as if the request had been lost).
    fn answer(&self, m: &Message, code: ErrorCode, reason: &str, mut extra: Vec<Box<dyn Setter>>) -> Verdict {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(Message { transaction_id: m.transaction_id, ..Message::default() }),
            Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() }),
        ];
        setters.append(&mut extra);
        let mut response = Message::new();
        match response.build(&setters) {
            Ok(()) => Verdict::Answer(response.raw),
            Err(e) => {
                tracing::warn!(error = %e, "turn error response not built");
                Verdict::Drop
            }
        }
    }
}

impl Guard {
    /// What the server grants: a success response to an Allocate makes an allocation live for
    /// its lifetime, one to a Refresh moves its end (zero ends it). Media (ChannelData, Data
    /// indications) is told apart by the two header bytes alone.
    fn watch_answer(&self, packet: &[u8], to: SocketAddr) {
        if packet.len() < 20 || !stun::message::is_message(packet) {
            return;
        }
        let mut typ = MessageType::default();
        typ.read_value(u16::from_be_bytes([packet[0], packet[1]]));
        if typ.class != CLASS_SUCCESS_RESPONSE || (typ.method != METHOD_ALLOCATE && typ.method != METHOD_REFRESH) {
            return;
        }
        let mut m = Message { raw: packet.to_vec(), ..Message::default() };
        if m.decode().is_err() {
            return;
        }
        let mut lifetime = Lifetime::default();
        if lifetime.get_from(&m).is_err() {
            return;
        }
        let now = std::time::Instant::now();
        if typ.method == METHOD_ALLOCATE {
            self.quota.granted((self.listener, to), lifetime.0, now);
        } else {
            self.quota.refreshed((self.listener, to), lifetime.0, now);
        }
    }
}

fn refused(refusal: Refusal) {
    metrics::counter!("switchboard_turn_auth_failures_total", "reason" => refusal.label()).increment(1);
}

#[async_trait]
impl Conn for Guard {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.inspect(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => continue,
                Verdict::Answer(response) => {
                    if let Err(e) = self.inner.send_to(&response, from).await {
                        tracing::debug!(error = %e, %from, "turn error response not sent");
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.watch_answer(buf, target);
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    /// Does nothing: `turn` closes a listener's socket whenever one of its allocations ends
    /// (the socket is shared by them all); the listener stops with the server instead.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
