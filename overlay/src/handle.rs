//! The application's side of the overlay: a cloneable handle that sends typed commands to
//! the swarm task over a bounded channel, and a stream of typed events.

use crate::rpc::Refusal;
use std::{collections::BTreeMap, sync::Arc};

use libp2p::{Multiaddr, PeerId, request_response::InboundRequestId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{
    event::OverlayEvent, gossip::GossipValidator, metrics::OverlayMetrics, network::Topic,
    reputation::Misbehaviour, rpc::Service,
};

/// Identifies an inbound request until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundId(pub(crate) InboundRequestId);

/// Something the overlay could not do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    /// The swarm task has stopped.
    #[error("the overlay has shut down")]
    ShutDown,
    /// No peer is subscribed to the topic yet (common right after connecting: retry).
    #[error("no peer is subscribed to topic {0}")]
    NoPeersForTopic(Topic),
    /// Publishing failed for another reason.
    #[error("publish on {topic} failed: {reason}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// libp2p's reason.
        reason: String,
    },
    /// A dial could not start.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// libp2p's reason.
        reason: String,
    },
    /// Subscribing failed.
    #[error("cannot subscribe to {topic}: {reason}")]
    Subscribe {
        /// The topic.
        topic: Topic,
        /// libp2p's reason.
        reason: String,
    },
    /// The inbound request is unknown (already answered, timed out, or dropped).
    #[error("no pending inbound request with that id")]
    UnknownRequest,
    /// Building or starting the swarm failed.
    #[error("overlay failed to start: {0}")]
    Start(String),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The overlay has shut down.
    #[error("the overlay has shut down")]
    ShutDown,
    /// No completed hello with that peer.
    #[error("peer {0} is not connected")]
    NotConnected(PeerId),
    /// Too many requests are waiting for answers.
    #[error("too many requests in flight ({0})")]
    TooManyInFlight(usize),
    /// The peer did not answer in time.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the answer came.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The peer does not speak the protocol.
    #[error("peer does not support the request protocol")]
    Unsupported,
    /// The peer's service refused, with its reason.
    #[error("refused by peer: {0}")]
    Refused(Refusal),
    /// The stream failed or the answer did not decode.
    #[error("i/o error: {0}")]
    Io(String),
}

/// A peer as the overlay knows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerSummary {
    /// The peer id, as text.
    pub peer_id: String,
    /// Its chain tip, hex.
    pub chain_tip: String,
    /// The Stacker DBs it replicates.
    pub stacker_dbs: Vec<String>,
}

/// The overlay's state at a moment.
#[derive(Clone, Debug, Serialize)]
pub struct OverlayStatus {
    /// The network this node is on.
    pub network_id: String,
    /// This node's peer id.
    pub peer_id: String,
    /// Where it listens.
    pub listen_addrs: Vec<String>,
    /// Peers with a completed hello.
    pub peers: Vec<PeerSummary>,
    /// Mesh size per subscribed topic.
    pub mesh: BTreeMap<String, usize>,
    /// Peers banned now.
    pub banned: usize,
    /// Entries in the DHT routing table.
    pub routing_table: usize,
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: Reply<Result<(), OverlayError>>,
    },
    Subscribe {
        topic: Topic,
        validator: Arc<dyn GossipValidator>,
        reply: Reply<Result<(), OverlayError>>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: Reply<Result<(), OverlayError>>,
    },
    Request {
        peer: PeerId,
        service: Service,
        body: Vec<u8>,
        reply: Reply<Result<Vec<u8>, RequestError>>,
    },
    Respond {
        id: InboundId,
        outcome: Result<Vec<u8>, Refusal>,
        reply: Reply<Result<(), OverlayError>>,
    },
    Report {
        peer: PeerId,
        misbehaviour: Misbehaviour,
    },
    SetHello {
        chain_tip: Vec<u8>,
        stacker_dbs: Vec<String>,
    },
    KeepConnected {
        peers: Vec<PeerId>,
    },
    Isolate {
        on: bool,
    },
    Status {
        reply: Reply<OverlayStatus>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// A cloneable handle to a running overlay.
#[derive(Clone)]
pub struct OverlayHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    metrics: OverlayMetrics,
}

impl OverlayHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        peer_id: PeerId,
        listen_addrs: Vec<Multiaddr>,
        metrics: OverlayMetrics,
    ) -> Self {
        OverlayHandle {
            commands,
            peer_id,
            listen_addrs,
            metrics,
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`, ready to hand to
    /// another node as a bootstrap address.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The node's counters.
    pub fn metrics(&self) -> &OverlayMetrics {
        &self.metrics
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Dials `addr`.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), OverlayError> {
        self.call(|reply| Command::Dial { addr, reply })
            .await
            .unwrap_or(Err(OverlayError::ShutDown))
    }

    /// Subscribes to `topic`; each message is judged by `validator` before it is
    /// delivered or forwarded.
    pub async fn subscribe(
        &self,
        topic: Topic,
        validator: Arc<dyn GossipValidator>,
    ) -> Result<(), OverlayError> {
        self.call(|reply| Command::Subscribe {
            topic,
            validator,
            reply,
        })
        .await
        .unwrap_or(Err(OverlayError::ShutDown))
    }

    /// Publishes `data` on `topic`.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), OverlayError> {
        self.call(|reply| Command::Publish { topic, data, reply })
            .await
            .unwrap_or(Err(OverlayError::ShutDown))
    }

    /// Sends a request to `peer` and waits for its answer (or the request timeout).
    pub async fn request(
        &self,
        peer: PeerId,
        service: Service,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        self.call(|reply| Command::Request {
            peer,
            service,
            body,
            reply,
        })
        .await
        .unwrap_or(Err(RequestError::ShutDown))
    }

    /// Answers an inbound request: a body, or the reason for refusing.
    pub async fn respond(
        &self,
        id: InboundId,
        outcome: Result<Vec<u8>, Refusal>,
    ) -> Result<(), OverlayError> {
        self.call(|reply| Command::Respond { id, outcome, reply })
            .await
            .unwrap_or(Err(OverlayError::ShutDown))
    }

    /// Reports misbehaviour found by a service above the overlay.
    pub async fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) {
        let _ = self
            .commands
            .send(Command::Report { peer, misbehaviour })
            .await;
    }

    /// Keeps direct connections to `peers` (replacing any set given before): they are
    /// dialled whenever not connected, and never pruned for the peer cap, nor counted
    /// against it. A federation's members need a direct connection to each other
    /// whatever the size of the roster (issue 13: a 50-member roster did not fit
    /// under the cap of 48).
    pub async fn keep_connected(&self, peers: Vec<PeerId>) {
        let _ = self.commands.send(Command::KeepConnected { peers }).await;
    }

    /// Cuts this node off the network, or lets it back: a fault switch for tests and the
    /// testnet's `--partition`. While on, every connection is closed and every new one,
    /// inbound or outbound, refused; when off, discovery dials its way back in.
    pub async fn isolate(&self, on: bool) {
        let _ = self.commands.send(Command::Isolate { on }).await;
    }

    /// Changes what this node says in its hello (sent to peers connecting from now on).
    pub async fn set_hello(&self, chain_tip: Vec<u8>, stacker_dbs: Vec<String>) {
        let _ = self
            .commands
            .send(Command::SetHello {
                chain_tip,
                stacker_dbs,
            })
            .await;
    }

    /// The overlay's peers, meshes and bans.
    pub async fn status(&self) -> Result<OverlayStatus, OverlayError> {
        self.call(|reply| Command::Status { reply })
            .await
            .ok_or(OverlayError::ShutDown)
    }

    /// Stops the swarm task and closes every connection.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}

/// The stream of overlay events. Events the application does not take in time are
/// dropped and counted (`events_dropped`), never allowed to stall the swarm.
pub struct OverlayEvents(pub(crate) mpsc::Receiver<OverlayEvent>);

impl OverlayEvents {
    /// The next event, or `None` once the overlay has shut down.
    pub async fn next(&mut self) -> Option<OverlayEvent> {
        self.0.recv().await
    }

    /// Splits the stream for two consumers of one node (the federation member and the
    /// producer, say): events for which `first` holds go to the first stream, the rest
    /// to the second. A task forwards them; a consumer that lags loses its events (the
    /// queue holds `capacity`), never the other's. Both end when the overlay shuts down.
    pub fn split(
        mut self,
        capacity: usize,
        first: impl Fn(&OverlayEvent) -> bool + Send + 'static,
    ) -> (OverlayEvents, OverlayEvents) {
        let (a_tx, a_rx) = mpsc::channel(capacity.max(1));
        let (b_tx, b_rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(event) = self.next().await {
                let to = if first(&event) { &a_tx } else { &b_tx };
                if let Err(mpsc::error::TrySendError::Closed(_)) = to.try_send(event)
                    && a_tx.is_closed()
                    && b_tx.is_closed()
                {
                    return;
                }
            }
        });
        (OverlayEvents(a_rx), OverlayEvents(b_rx))
    }
}
