//! Holds a protocol's traffic with a peer until that peer completed the hello.
//!
//! The rule (issue "attacks found in review", overlay item 10): **nothing is served to,
//! and nothing is taken from, a peer before its hello.** The request-response service
//! enforces it itself (a request before the hello gets a closed stream). Gossipsub cannot:
//! it starts exchanging subscriptions, GRAFTs and messages as soon as a connection is up,
//! so a peer of another network, or one that holds its hello open for the ten seconds it
//! is allowed, would otherwise receive our gossip and have its messages validated and
//! delivered.
//!
//! [`HelloGate`] wraps such a behaviour. Until [`HelloGate::admit`] is called for a peer:
//! - the behaviour is not told the connection is established (gossipsub sends its
//!   subscriptions, and adds the peer to scoring, when it is told), so it knows no topic
//!   in common with the peer and sends it nothing;
//! - events the peer's connection handlers report (its subscriptions, messages, control
//!   messages) are held, not given to the behaviour, so none of them reaches the
//!   application, the duplicate cache or the mesh;
//! - handler commands the behaviour issues for the peer are held too.
//!
//! At admission the behaviour is told of the peer's open connections, then the held
//! events are released in order, so the protocol starts exactly as if the connections
//! had opened then. A peer may have at most [`HELD_PER_PEER`] events held each way: the
//! rest are dropped (an honest peer sends one subscription frame before its hello
//! completes; a flood is cut, and the peer is disconnected at its hello deadline anyway).
//! When the peer's last connection closes, its admission and anything still held are
//! forgotten: a new connection says hello again.
//!
//! Kademlia and identify are not gated: they are how a node finds the network, and they
//! carry only addresses a peer may learn from anyone.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    ops::{Deref, DerefMut},
    task::{Context, Poll, Waker},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{ConnectedPoint, Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::ConnectionEstablished,
    },
};

/// Most events held for one peer in each direction before its hello.
pub const HELD_PER_PEER: usize = 32;

type Outbound<B> = ToSwarm<<B as NetworkBehaviour>::ToSwarm, THandlerInEvent<B>>;

/// A behaviour whose traffic with a peer waits for that peer's hello.
pub struct HelloGate<B: NetworkBehaviour> {
    inner: B,
    admitted: HashSet<PeerId>,
    /// Connections of peers not yet admitted, which the behaviour has not been told of.
    unannounced: HashMap<PeerId, Vec<(ConnectionId, ConnectedPoint)>>,
    /// What the peer's handlers reported before its hello, oldest first.
    held_from: HashMap<PeerId, VecDeque<(ConnectionId, THandlerOutEvent<B>)>>,
    /// What the behaviour wanted to send the peer before its hello, oldest first.
    held_to: HashMap<PeerId, VecDeque<Outbound<B>>>,
    /// Released at admission, waiting to be returned from `poll`.
    released: VecDeque<Outbound<B>>,
    /// Events dropped because a peer's queue was full (for tests and metrics).
    dropped: u64,
    waker: Option<Waker>,
}

impl<B: NetworkBehaviour> HelloGate<B> {
    /// Gates `inner`.
    pub fn new(inner: B) -> Self {
        HelloGate {
            inner,
            admitted: HashSet::new(),
            unannounced: HashMap::new(),
            held_from: HashMap::new(),
            held_to: HashMap::new(),
            released: VecDeque::new(),
            dropped: 0,
            waker: None,
        }
    }

    /// Opens the gate for `peer`, whose hello just completed: the behaviour is told of
    /// its connections, then what was held is released in order. Admitting a peer twice
    /// does nothing.
    pub fn admit(&mut self, peer: PeerId) {
        if !self.admitted.insert(peer) {
            return;
        }
        let connections = self.unannounced.remove(&peer).unwrap_or_default();
        for (other_established, (connection_id, endpoint)) in connections.iter().enumerate() {
            self.inner
                .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                    peer_id: peer,
                    connection_id: *connection_id,
                    endpoint,
                    failed_addresses: &[],
                    other_established,
                }));
        }
        for (connection, event) in self.held_from.remove(&peer).unwrap_or_default() {
            self.inner
                .on_connection_handler_event(peer, connection, event);
        }
        let to = self.held_to.remove(&peer).unwrap_or_default();
        if !to.is_empty() {
            self.released.extend(to);
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    /// Whether `peer` has been admitted.
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted.contains(peer)
    }

    /// Events dropped so far because a peer not yet admitted had a full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn hold_to(&mut self, peer: PeerId, event: Outbound<B>) {
        let queue = self.held_to.entry(peer).or_default();
        if queue.len() < HELD_PER_PEER {
            queue.push_back(event);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn forget_connection(&mut self, peer: PeerId, connection: ConnectionId, last: bool) {
        if last {
            self.admitted.remove(&peer);
            self.unannounced.remove(&peer);
            self.held_from.remove(&peer);
            self.held_to.remove(&peer);
            return;
        }
        if let Some(connections) = self.unannounced.get_mut(&peer) {
            connections.retain(|(held, _)| *held != connection);
        }
        if let Some(queue) = self.held_from.get_mut(&peer) {
            queue.retain(|(held, _)| *held != connection);
        }
        if let Some(queue) = self.held_to.get_mut(&peer) {
            queue.retain(|event| {
                !matches!(
                    event,
                    ToSwarm::NotifyHandler { handler: NotifyHandler::One(held), .. } if *held == connection
                )
            });
        }
    }
}

/// The gated behaviour's own methods (publish, subscribe, …) stay reachable.
impl<B: NetworkBehaviour> Deref for HelloGate<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B: NetworkBehaviour> DerefMut for HelloGate<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for HelloGate<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(opened)
                if !self.admitted.contains(&opened.peer_id) =>
            {
                // Told at admission.
                self.unannounced
                    .entry(opened.peer_id)
                    .or_default()
                    .push((opened.connection_id, opened.endpoint.clone()));
                return;
            }
            // Passed on even for a connection the behaviour was not told of: it
            // registered the connection when it made its handler.
            FromSwarm::ConnectionClosed(closed) => self.forget_connection(
                closed.peer_id,
                closed.connection_id,
                closed.remaining_established == 0,
            ),
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if self.admitted.contains(&peer) {
            self.inner
                .on_connection_handler_event(peer, connection, event);
            return;
        }
        let queue = self.held_from.entry(peer).or_default();
        if queue.len() < HELD_PER_PEER {
            queue.push_back((connection, event));
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outbound<Self>> {
        if let Some(event) = self.released.pop_front() {
            return Poll::Ready(event);
        }
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::NotifyHandler {
                    peer_id,
                    handler,
                    event,
                }) if !self.admitted.contains(&peer_id) => {
                    self.hold_to(
                        peer_id,
                        ToSwarm::NotifyHandler {
                            peer_id,
                            handler,
                            event,
                        },
                    );
                }
                Poll::Ready(event) => return Poll::Ready(event),
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}
