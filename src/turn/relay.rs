//! Relay ports: each allocation gets a UDP port from the configured range, bound to the relay
//! address, and counts in `switchboard_turn_allocations` for as long as its socket lives.
//!
//! `turn`'s `RelayAddressGeneratorRanges` picks and binds the port; the wrapper here counts the
//! socket. Counting sockets rather than allocation events is exact: `turn` reports no
//! allocation's start and not every end, but an allocation's relay socket lives exactly as long
//! as it does (the one `turn` binds to probe for an EVEN-PORT is dropped at once and counts
//! for a moment only).

use ::turn::relay::RelayAddressGenerator;
use ::turn::relay::relay_range::RelayAddressGeneratorRanges;
use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use webrtc_util::Conn;

/// Binding attempts at random ports of the range before an allocation fails (`turn`'s default
/// is 10, which a range mostly in use would exhaust).
const MAX_RETRIES: u16 = 40;

/// The relay port allocator of one listener.
pub struct Relays {
    ranges: RelayAddressGeneratorRanges,
}

impl Relays {
    pub fn new(address: IpAddr, (min_port, max_port): (u16, u16)) -> Relays {
        // `turn` appends `:port` to this text and resolves it: an IPv6 address needs brackets.
        let host = match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Relays {
            ranges: RelayAddressGeneratorRanges {
                relay_address: address,
                min_port,
                max_port,
                max_retries: MAX_RETRIES,
                address: host,
                net: Arc::new(webrtc_util::vnet::net::Net::new(None)),
            },
        }
    }
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), ::turn::Error> {
        self.ranges.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), ::turn::Error> {
        let (conn, addr) = self.ranges.allocate_conn(use_ipv4, requested_port).await?;
        Ok((Arc::new(Counted::new(conn)), addr))
    }
}

/// A relay socket that counts in the allocations gauge while it lives.
struct Counted {
    inner: Arc<dyn Conn + Send + Sync>,
}

impl Counted {
    fn new(inner: Arc<dyn Conn + Send + Sync>) -> Counted {
        metrics::gauge!("switchboard_turn_allocations").increment(1.0);
        Counted { inner }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_turn_allocations").decrement(1.0);
    }
}

#[async_trait]
impl Conn for Counted {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
