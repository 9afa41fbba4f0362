//! Cluster building blocks of Switchboard: node identity and room placement.
//!
//! Formation (ractor_cluster), the failure detector and leases come with the cluster work;
//! what is here is real now and used by a single node too.

pub mod node_id;
pub mod placement;

pub use node_id::NodeId;
pub use placement::place;
