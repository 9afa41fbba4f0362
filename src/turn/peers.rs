//! Which peer addresses the embedded TURN server relays to. A TURN server sends datagrams
//! wherever its clients ask, so a public relay that accepted loopback or private peers would
//! let any credential holder reach the services beside it (coturn's `denied-peer-ip`
//! lines in `deploy/coturn/turnserver.conf` close the same hole).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The relay policy of one server.
#[derive(Clone, Copy, Debug)]
pub struct PeerPolicy {
    /// Refuse internal (non-public) peers.
    pub deny_internal: bool,
}

impl PeerPolicy {
    /// Whether data may be relayed to `ip`. Multicast, broadcast and unspecified addresses
    /// never are (coturn's `no-multicast-peers`); internal ones when the policy says so.
    pub fn allows(self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if never(ip) {
            return false;
        }
        !(self.deny_internal && is_internal(ip))
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address (a relay would reach that address).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn never(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Not a public unicast address: loopback, private, link-local, shared (CGNAT), and the
/// special-purpose ranges of RFC 6890, in IPv4 and IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation, 192.0.2.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation, 198.51.100.0/24
        || (a == 203 && b == 0 && c == 113) // documentation, 203.0.113.0/24
        || a >= 240 // reserved, 240.0.0.0/4
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard-only, 100::/64
        // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] && {
            let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            internal_v4(v4)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_ranges_are_recognised() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.1.2.3",
            "240.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_internal(ip(s)), "{s}");
        }
        for s in ["8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808"] {
            assert!(!is_internal(ip(s)), "{s}");
        }
    }

    #[test]
    fn multicast_and_unspecified_are_never_relayed_to() {
        let open = PeerPolicy { deny_internal: false };
        assert!(open.allows(ip("127.0.0.1")));
        assert!(open.allows(ip("10.0.0.1")));
        for s in ["224.0.0.251", "255.255.255.255", "0.0.0.0", "ff02::1", "::", "::ffff:224.0.0.1"] {
            assert!(!open.allows(ip(s)), "{s}");
        }
        let closed = PeerPolicy { deny_internal: true };
        assert!(!closed.allows(ip("127.0.0.1")));
        assert!(!closed.allows(ip("::ffff:192.168.0.1")));
        assert!(closed.allows(ip("8.8.8.8")));
    }
}
