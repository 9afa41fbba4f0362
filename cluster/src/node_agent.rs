//! Node agent: the one remotable actor of the membership layer, one per node, in the process
//! group `agent:{node_id}`. Peers call it to heartbeat; its answer says who this node is.

use crate::wire::Bincode;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The process group of a node's agent.
pub fn agent_group(node_id: &str) -> String {
    format!("agent:{node_id}")
}

/// What a node says about itself in every heartbeat answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHello {
    /// Node id.
    pub node_id: String,
    /// Cluster (ractor_cluster) address.
    pub cluster_addr: String,
    /// HTTP and WebSocket address.
    pub http_addr: String,
    /// Where it takes node links (see [`crate::link`]); empty when it takes none.
    pub link_addr: String,
    /// Proof of the token signing secret without revealing it (an HMAC of a fixed text).
    pub secret_fingerprint: String,
    /// Random per process start: tells a restarted node from the one before.
    pub incarnation: u64,
    /// Rooms this node hosts.
    pub rooms: u64,
    /// Open client connections.
    pub connections: u64,
}

/// Messages of the agent. Variants are identified by name on the wire: add, never rename.
#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    /// Heartbeat: answers with this node's hello.
    #[rpc]
    Hello(RpcReplyPort<Bincode<NodeHello>>),
}

/// The actor.
pub struct NodeAgent;

/// Produces the current hello (counts change over time).
pub type HelloSource = Arc<dyn Fn() -> NodeHello + Send + Sync>;

impl Actor for NodeAgent {
    type Msg = AgentMsg;
    type State = HelloSource;
    type Arguments = HelloSource;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        hello: HelloSource,
    ) -> Result<HelloSource, ActorProcessingErr> {
        ractor::pg::join(agent_group(&hello().node_id), vec![myself.get_cell()]);
        Ok(hello)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        hello: &mut HelloSource,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Hello(reply) => {
                let _ = reply.send(Bincode(hello()));
            }
        }
        Ok(())
    }
}
