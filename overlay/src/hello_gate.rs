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
//! The gate works at the connection: [`HelloGate`] wraps each of the behaviour's
//! connection handlers in a [`GatedHandler`] that stays **closed** until
//! [`HelloGate::admit`] opens it. A closed handler
//! - is not polled, so it opens no stream and sends nothing: what the behaviour queues
//!   for the peer meanwhile (our subscriptions, gossipsub's extensions message, later
//!   subscription changes) waits in its bounded queue and goes out at admission;
//! - parks the peer's inbound streams unread, at most [`PARKED_STREAMS`] per
//!   connection (more are closed): nothing the peer sends is decoded, validated,
//!   cached as a duplicate or delivered, and what it can make us buffer is bounded by
//!   the multiplexer's window on those few streams.
//!
//! At admission every connection's handler opens and takes its parked streams, so the
//! protocol starts as if the connections had opened then. A connection opened after
//! admission starts open. When the peer's last connection closes its admission is
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
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        handler::{ConnectionEvent, FullyNegotiatedInbound},
    },
};

/// Inbound streams a closed handler keeps unread for its admission (gossipsub opens
/// one per connection).
pub const PARKED_STREAMS: usize = 2;

/// A command to a [`GatedHandler`].
#[derive(Debug)]
pub enum GateIn<E> {
    /// The peer completed its hello: open.
    Open,
    /// For the wrapped handler.
    Inner(E),
}

/// A connection handler that does nothing for its peer until opened.
pub struct GatedHandler<H: ConnectionHandler> {
    inner: H,
    open: bool,
    parked: Vec<FullyNegotiatedInbound<H::InboundProtocol, H::InboundOpenInfo>>,
    waker: Option<Waker>,
}

impl<H: ConnectionHandler> GatedHandler<H> {
    fn new(inner: H, open: bool) -> Self {
        GatedHandler {
            inner,
            open,
            parked: Vec::new(),
            waker: None,
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for GatedHandler<H> {
    type FromBehaviour = GateIn<H::FromBehaviour>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if !self.open {
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        if !self.open {
            return Poll::Ready(None);
        }
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {
            GateIn::Open => {
                if self.open {
                    return;
                }
                self.open = true;
                for stream in std::mem::take(&mut self.parked) {
                    self.inner
                        .on_connection_event(ConnectionEvent::FullyNegotiatedInbound(stream));
                }
                if let Some(waker) = self.waker.take() {
                    waker.wake();
                }
            }
            GateIn::Inner(event) => self.inner.on_behaviour_event(event),
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(stream) if !self.open => {
                // Beyond the bound the stream is dropped, which closes it.
                if self.parked.len() < PARKED_STREAMS {
                    self.parked.push(stream);
                }
            }
            event => self.inner.on_connection_event(event),
        }
    }
}

/// A behaviour whose traffic with a peer waits for that peer's hello.
pub struct HelloGate<B: NetworkBehaviour> {
    inner: B,
    admitted: HashSet<PeerId>,
    /// Every open connection of every peer, to open their handlers at admission.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Handlers to open, returned from `poll`.
    to_open: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl<B: NetworkBehaviour> HelloGate<B> {
    /// Gates `inner`.
    pub fn new(inner: B) -> Self {
        HelloGate {
            inner,
            admitted: HashSet::new(),
            connections: HashMap::new(),
            to_open: VecDeque::new(),
            waker: None,
        }
    }

    /// Opens the gate for `peer`, whose hello just completed: each of its connections'
    /// handlers opens. Admitting a peer twice does nothing.
    pub fn admit(&mut self, peer: PeerId) {
        if !self.connections.contains_key(&peer) || !self.admitted.insert(peer) {
            return;
        }
        for connection in self.connections.get(&peer).into_iter().flatten() {
            self.to_open.push_back((peer, *connection));
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn handler(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        inner: THandler<B>,
    ) -> GatedHandler<THandler<B>> {
        self.connections.entry(peer).or_default().push(connection);
        GatedHandler::new(inner, self.admitted.contains(&peer))
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
    type ConnectionHandler = GatedHandler<B::ConnectionHandler>;
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
        let inner = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(self.handler(peer, connection_id, inner))
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
        let inner = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(self.handler(peer, connection_id, inner))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = &event {
            if let Some(connections) = self.connections.get_mut(&closed.peer_id) {
                connections.retain(|c| *c != closed.connection_id);
            }
            if closed.remaining_established == 0 {
                self.connections.remove(&closed.peer_id);
                self.admitted.remove(&closed.peer_id);
            }
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection)) = self.to_open.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: GateIn::Open,
            });
        }
        self.waker = Some(cx.waker().clone());
        self.inner.poll(cx).map(|event| event.map_in(GateIn::Inner))
    }
}
