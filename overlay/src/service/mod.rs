//! The task that owns the swarm.
//!
//! One task owns the libp2p swarm; everything else talks to it through an
//! [`OverlayHandle`] (bounded command channel, oneshot replies) and listens on
//! [`OverlayEvents`]. The loop never awaits the application: events go out with
//! `try_send`, and a full queue drops the event and counts it.

mod discovery;
mod gossip_flow;
mod peers;
mod swarm_events;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits,
    gossipsub::TopicHash,
    identify, kad, mdns, noise, ping,
    request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel},
    swarm::{SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    behaviour::TenureBehaviour,
    bodies::BodyStore,
    config::OverlayConfig,
    event::OverlayEvent,
    gossip::{self, GossipValidator},
    handle::{Command, OverlayError, OverlayEvents, OverlayHandle, OverlayStatus, RequestError},
    hello::{HELLO_FRAME_LIMIT, Hello},
    hello_gate::HelloGate,
    identity::NodeKey,
    logs,
    metrics::{Counters, OverlayMetrics},
    network::Topic,
    reputation::{Misbehaviour, PeerReputation},
    rpc::{RpcRequest, RpcResponse},
    wire::{Decoded, FrameCodec},
};

use self::{discovery::Discovery, peers::PeerTable};

/// Protocol name of the hello exchange. Not per network: a peer of another network must
/// be able to say so, and be told.
pub const HELLO_PROTOCOL: &str = "/tenure/hello/1";

/// Protocol name of the request-response envelope.
pub const RPC_PROTOCOL: &str = "/tenure/rpc/1";

/// Outbound requests waiting for answers, at most.
const MAX_OUTBOUND_IN_FLIGHT: usize = 1024;

/// Inbound requests waiting for the application's answer, at most.
const MAX_INBOUND_PENDING: usize = 1024;

/// How long a connected peer may take to complete the hello before it is dropped.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// The first wait before a kept peer that is not connected is dialled again.
const KEPT_REDIAL_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between dials of a kept peer.
const KEPT_REDIAL_MAX: Duration = Duration::from_secs(60);

/// How long a peer of another network is kept from being dialled again.
const OTHER_NETWORK_BACKOFF: Duration = Duration::from_secs(600);

/// How long a refused peer's connection stays open after our answer was written.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// How long a new connection is safe from pruning.
const PRUNE_GRACE: Duration = Duration::from_secs(5);

/// Bytes of large-message bodies kept for serving to peers.
const BODY_STORE_BYTES: usize = 64 * 1024 * 1024;

/// How long a body is kept for serving.
const BODY_STORE_AGE: Duration = Duration::from_secs(30);

/// How often body fetches are hedged and expired (a fraction of
/// [`crate::body_fetch::HEDGE`]).
const FETCH_TICK: Duration = Duration::from_millis(50);

/// How long start-up waits for the listeners to report their addresses.
const LISTEN_DEADLINE: Duration = Duration::from_secs(5);

/// Starts an overlay node: builds the swarm, binds its listeners, dials its bootstrap
/// peers and spawns the task that owns it.
pub async fn spawn(
    config: OverlayConfig,
    key: NodeKey,
) -> Result<(OverlayHandle, OverlayEvents), OverlayError> {
    config
        .validate()
        .map_err(|e| OverlayError::Start(e.to_string()))?;
    let mut registry = libp2p::metrics::Registry::default();
    let mut swarm = build_swarm(&config, &key, &mut registry)?;
    let counters = Counters::register(&mut registry);
    let metrics = OverlayMetrics::new(registry, counters);

    let listen_addrs = bind_listeners(&mut swarm, &config.listen_addrs).await?;
    let peer_id = key.peer_id();
    let announced: Vec<Multiaddr> = listen_addrs
        .iter()
        .map(|a| a.clone().with_p2p(peer_id).unwrap_or_else(|a| a))
        .collect();
    info!(target: logs::SERVICE, %peer_id, addrs = ?announced, "overlay listening");

    let (command_tx, command_rx) = mpsc::channel(config.command_queue);
    let (event_tx, event_rx) = mpsc::channel(config.event_queue);
    let handle = OverlayHandle::new(command_tx, peer_id, announced.clone(), metrics.clone());

    let mut service = OverlayService {
        hello: Hello::new(
            config.network_id.clone(),
            Vec::new(),
            config.stacker_dbs.clone(),
        ),
        reputation: PeerReputation::new(config.ban_duration),
        discovery: Discovery::new(&config),
        topics: HashMap::new(),
        peers: PeerTable::default(),
        outbound: HashMap::new(),
        inbound: HashMap::new(),
        bodies: BodyStore::new(BODY_STORE_BYTES, BODY_STORE_AGE),
        fetches: Default::default(),
        refuse_after_response: HashMap::new(),
        listen_addrs: announced,
        swarm,
        config,
        metrics,
        events: event_tx,
        kept: Default::default(),
        kept_redial: HashMap::new(),
        kept_lookup: 0,
        isolated: None,
    };
    service.dial_bootstrap();
    tokio::spawn(service.run(command_rx));
    Ok((handle, OverlayEvents(event_rx)))
}

fn build_swarm(
    config: &OverlayConfig,
    key: &NodeKey,
    registry: &mut libp2p::metrics::Registry,
) -> Result<Swarm<TenureBehaviour>, OverlayError> {
    let start = |e: &dyn std::fmt::Display| OverlayError::Start(e.to_string());
    let network = config.network_id.clone();
    let gossip_params = config.gossip.clone();
    let limits = config.limits;
    let rpc_limit = config.max_rpc_frame_bytes;
    let request_timeout = config.request_timeout;
    let enable_mdns = config.enable_mdns;
    let kad_protocol = StreamProtocol::try_from_owned(format!("/tenure/{network}/kad/1"))
        .map_err(|e| start(&e))?;

    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| start(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(
            |keypair| -> Result<TenureBehaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = keypair.public().to_peer_id();
                let connection_limits = connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(limits.max_established))
                    .with_max_established_per_peer(Some(limits.max_per_peer))
                    .with_max_pending_incoming(Some(limits.max_pending_incoming));
                let mut kad_config = kad::Config::new(kad_protocol);
                kad_config.set_query_timeout(Duration::from_secs(20));
                // Insert routes ourselves: on a full bucket kad dials the oldest disconnected
                // entry to test it, and with a peer cap that dial reconnects the peers we
                // just pruned, over and over.
                kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                let mdns = if enable_mdns {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                let rr_config = request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(256);
                Ok(TenureBehaviour {
                    limits: connection_limits::Behaviour::new(connection_limits),
                    blocked: allow_block_list::Behaviour::default(),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/tenure/1".into(), keypair.public())
                            .with_agent_version(format!("tenure/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::default(),
                    kad,
                    mdns: Toggle::from(mdns),
                    gossipsub: HelloGate::new(gossip::build(keypair, &network, &gossip_params)?),
                    hello: request_response::Behaviour::with_codec(
                        FrameCodec::new(HELLO_FRAME_LIMIT, HELLO_FRAME_LIMIT),
                        [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
                        rr_config.clone(),
                    ),
                    rpc: request_response::Behaviour::with_codec(
                        FrameCodec::new(rpc_limit, rpc_limit),
                        [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Full)],
                        rr_config,
                    ),
                })
            },
        )
        .map_err(|e| start(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}

async fn bind_listeners(
    swarm: &mut Swarm<TenureBehaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, OverlayError> {
    for addr in addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| OverlayError::Start(format!("listen on {addr}: {e}")))?;
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::sleep(LISTEN_DEADLINE);
    tokio::pin!(deadline);
    while bound.len() < addrs.len() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => bound.push(address),
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(OverlayError::Start(format!("listener failed: {error}")));
                }
                SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(OverlayError::Start(format!("listener closed: {error}")));
                }
                _ => {}
            },
            _ = &mut deadline => {
                return Err(OverlayError::Start("listeners did not report an address in time".into()));
            }
        }
    }
    Ok(bound)
}

/// The state the swarm task owns.
pub(crate) struct OverlayService {
    swarm: Swarm<TenureBehaviour>,
    config: OverlayConfig,
    hello: Hello,
    reputation: PeerReputation,
    discovery: Discovery,
    topics: HashMap<TopicHash, (Topic, Arc<dyn GossipValidator>)>,
    peers: PeerTable,
    outbound: HashMap<OutboundRequestId, crate::handle::Reply<Result<Vec<u8>, RequestError>>>,
    inbound: HashMap<request_response::InboundRequestId, ResponseChannel<RpcResponse>>,
    /// Bodies of large messages this node published or fetched, served on request.
    bodies: BodyStore,
    /// Body fetches in flight.
    fetches: gossip_flow::Fetches,
    /// Peers of another network we answered: they are disconnected once the answer is
    /// out and a grace period has passed, so the answer is not cut off by the close.
    refuse_after_response: HashMap<PeerId, Option<Instant>>,
    listen_addrs: Vec<Multiaddr>,
    metrics: OverlayMetrics,
    events: mpsc::Sender<OverlayEvent>,
    /// Peers this node keeps direct connections to, outside the peer cap
    /// ([`crate::OverlayHandle::keep_connected`]).
    kept: std::collections::HashSet<PeerId>,
    /// When each kept peer that is not connected may be dialled again, and the wait
    /// after that: doubling per dial up to [`KEPT_REDIAL_MAX`], so a kept peer id that
    /// leads nowhere (or to a node that keeps refusing us) is not dialled every tick.
    kept_redial: HashMap<PeerId, (Instant, Duration)>,
    /// Turns of the DHT lookups for kept peers without a known address.
    kept_lookup: usize,
    /// While cut off ([`crate::OverlayHandle::isolate`]): the connection limits to
    /// restore.
    isolated: Option<connection_limits::ConnectionLimits>,
}

impl OverlayService {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(self.config.discovery_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fetch_tick = tokio::time::interval(FETCH_TICK);
        fetch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = tick.tick() => self.on_tick(Instant::now()),
                _ = fetch_tick.tick() => self.on_fetch_tick(Instant::now()),
            }
        }
        info!(target: logs::SERVICE, peer_id = %self.swarm.local_peer_id(), "overlay stopped");
    }

    /// Hands an event to the application, or drops and counts it if the queue is full.
    fn emit(&mut self, event: OverlayEvent) {
        if let Err(err) = self.events.try_send(event) {
            self.metrics.counters().events_dropped.inc();
            if let mpsc::error::TrySendError::Full(OverlayEvent::InboundRequest { id, .. }) = err {
                // Dropping the channel tells the asker at once instead of letting it time out.
                self.inbound.remove(&id.0);
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Dial { addr, reply } => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| OverlayError::Dial {
                        addr,
                        reason: e.to_string(),
                    });
                let _ = reply.send(result);
            }
            Command::Subscribe {
                topic,
                validator,
                reply,
            } => {
                let ident = gossip::ident_topic(&self.config.network_id, topic);
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&ident)
                    .map(|_| ())
                    .map_err(|e| OverlayError::Subscribe {
                        topic,
                        reason: e.to_string(),
                    });
                if result.is_ok() {
                    self.topics.insert(ident.hash(), (topic, validator));
                }
                let _ = reply.send(result);
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Request {
                peer,
                service,
                body,
                reply,
            } => self.send_request(peer, service, body, reply),
            Command::Respond { id, outcome, reply } => {
                let result = match self.inbound.remove(&id.0) {
                    Some(channel) => {
                        if let Ok(body) = &outcome {
                            self.metrics
                                .counters()
                                .rpc_bytes_sent
                                .inc_by(body.len() as u64);
                        }
                        self.swarm
                            .behaviour_mut()
                            .rpc
                            .send_response(channel, RpcResponse::new(outcome))
                            .map_err(|_| OverlayError::UnknownRequest)
                    }
                    None => Err(OverlayError::UnknownRequest),
                };
                let _ = reply.send(result);
            }
            Command::Report { peer, misbehaviour } => self.penalise(peer, misbehaviour),
            Command::SetHello {
                chain_tip,
                stacker_dbs,
            } => {
                self.hello = Hello::new(self.config.network_id.clone(), chain_tip, stacker_dbs);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::KeepConnected { peers } => {
                let local = *self.swarm.local_peer_id();
                self.kept = peers.into_iter().filter(|p| *p != local).collect();
                // The total cap grows with the kept peers (a roster of 100 with a
                // simultaneous dial here and there passed the default 128); the cap
                // per peer stays.
                let limits = self.connection_limits();
                match &mut self.isolated {
                    Some(saved) => *saved = limits,
                    None => *self.swarm.behaviour_mut().limits.limits_mut() = limits,
                }
                self.dial_kept(Instant::now());
            }
            Command::Isolate { on } => self.isolate(on),
            Command::Shutdown { .. } => {}
        }
    }

    /// The connection limits: the configured caps, the total raised by what the kept
    /// peers may hold.
    fn connection_limits(&self) -> connection_limits::ConnectionLimits {
        let caps = self.config.limits;
        let kept = u32::try_from(self.kept.len()).unwrap_or(u32::MAX);
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(
                caps.max_established
                    .saturating_add(kept.saturating_mul(caps.max_per_peer)),
            ))
            .with_max_established_per_peer(Some(caps.max_per_peer))
            .with_max_pending_incoming(Some(caps.max_pending_incoming))
    }

    /// Cuts the node off (limits of zero connections, every connection closed), or
    /// restores its limits.
    fn isolate(&mut self, on: bool) {
        let limits = self.swarm.behaviour_mut().limits.limits_mut();
        match (on, self.isolated.take()) {
            (true, saved) => {
                let normal = saved.unwrap_or_else(|| limits.clone());
                *limits = connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(0))
                    .with_max_pending_outgoing(Some(0))
                    .with_max_established(Some(0));
                self.isolated = Some(normal);
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for peer in connected {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
            (false, Some(normal)) => *limits = normal,
            (false, None) => {}
        }
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        service: crate::rpc::Service,
        body: Vec<u8>,
        reply: crate::handle::Reply<Result<Vec<u8>, RequestError>>,
    ) {
        if !self.peers.is_ready(&peer) {
            let _ = reply.send(Err(RequestError::NotConnected(peer)));
            return;
        }
        if self.outbound.len() >= MAX_OUTBOUND_IN_FLIGHT {
            let _ = reply.send(Err(RequestError::TooManyInFlight(self.outbound.len())));
            return;
        }
        let counters = self.metrics.counters();
        counters.rpc_requests_sent.inc();
        counters.rpc_bytes_sent.inc_by(body.len() as u64);
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(&peer, Decoded::Valid(RpcRequest::new(service, body)));
        self.outbound.insert(id, reply);
    }

    /// Records misbehaviour; bans (closing every connection) when the score says so.
    fn penalise(&mut self, peer: PeerId, reason: Misbehaviour) {
        let now = Instant::now();
        let outcome = self.reputation.penalise(peer, &reason, now);
        self.metrics.counters().peer_penalties.inc();
        warn!(target: logs::PEERS, %peer, %reason, score = outcome.score, "peer penalised");
        self.emit(OverlayEvent::PeerPenalised {
            peer,
            reason,
            score: outcome.score,
        });
        if outcome.newly_banned {
            self.metrics.counters().peer_bans.inc();
            warn!(target: logs::PEERS, %peer, "peer banned");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.swarm.behaviour_mut().kad.remove_peer(&peer);
            self.discovery.forget(&peer);
            self.emit(OverlayEvent::PeerBanned { peer });
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.bodies.expire(now);
        for peer in self.reputation.expire_bans(now) {
            debug!(target: logs::PEERS, %peer, "ban expired");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let refused: Vec<PeerId> = self
            .refuse_after_response
            .iter()
            .filter(|(_, at)| at.is_some_and(|at| now >= at))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in refused {
            self.refuse_after_response.remove(&peer);
            self.keep_away(peer, OTHER_NETWORK_BACKOFF);
        }
        for peer in self.peers.hello_overdue(now, HELLO_DEADLINE) {
            debug!(target: logs::PEERS, %peer, "no hello in time; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        if self.isolated.is_none() {
            self.discover(now);
        }
        self.prune_excess_peers(now);
    }

    /// Keeps the node at `max_peers`: closes connections to peers outside every mesh.
    /// Kept peers neither count nor are closed.
    fn prune_excess_peers(&mut self, now: Instant) {
        let kept = self
            .kept
            .iter()
            .filter(|p| self.peers.is_connected(p))
            .count();
        let connected = self.peers.connected_count().saturating_sub(kept);
        if connected <= self.config.max_peers {
            return;
        }
        let in_mesh: std::collections::HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let excess = connected - self.config.max_peers;
        for peer in self.peers.prune_candidates(now, PRUNE_GRACE, excess, |p| {
            in_mesh.contains(p) || self.kept.contains(p)
        }) {
            debug!(target: logs::PEERS, %peer, "over the peer cap; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn status(&mut self) -> OverlayStatus {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mesh = self
            .topics
            .iter()
            .map(|(hash, (topic, _))| (topic.name().to_owned(), gossipsub.mesh_peers(hash).count()))
            .collect();
        OverlayStatus {
            network_id: self.config.network_id.to_string(),
            peer_id: self.swarm.local_peer_id().to_string(),
            listen_addrs: self.listen_addrs.iter().map(ToString::to_string).collect(),
            peers: self.peers.summaries(),
            mesh,
            banned: self.reputation.banned_count(Instant::now()),
            routing_table: self
                .swarm
                .behaviour_mut()
                .kad
                .kbuckets()
                .map(|bucket| bucket.num_entries())
                .sum(),
        }
    }
}
