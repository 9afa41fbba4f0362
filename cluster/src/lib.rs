//! Cluster building blocks of Switchboard: node identity, formation over ractor_cluster,
//! membership with a failure detector of our own, and room placement.
//!
//! ractor_cluster gives a full mesh of authenticated TCP sessions and process groups, but no
//! reconnection, no timeouts and no failure detection beyond "the TCP connection closed". This
//! crate adds those: a seed dialer with backoff, a membership table keyed by node id that
//! debounces session flaps, and a heartbeat (an RPC to each peer's [`NodeAgent`]) that marks
//! a silent peer down within a configured timeout.

pub mod link;
pub mod membership;
pub mod node_agent;
pub mod node_id;
pub mod placement;
pub mod routing;
pub mod wire;

pub mod dialer;
mod heartbeat;

pub use link::Links;
pub use membership::{Cluster, ClusterConfig, ClusterError, ClusterTls, LiveView, MemberState, MemberView, PeerSource};
pub use node_agent::NodeHello;
pub use node_id::NodeId;
pub use placement::{Candidate, load_score, place, place_by_load};
