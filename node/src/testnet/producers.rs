//! The testnet's producer set: every testnet node is a producer with a federation
//! member. They make the term's key with the weighted DKG over the overlay, then
//! elect a leader and produce blocks of transfers from a load generator.
//!
//! What the testnet decides for now (the burnchain scan of enrollments and terms is
//! a later step): one term; each producer's spend is set here (node `i` of `n`
//! spends `n - i` units), its weight is its share of the 100 FROST shares in
//! proportion (largest remainders), and the shares are numbered in roster order,
//! which the term context's share owners follow. The term's coinbase pays every
//! producer pro rata by spend; the load generator sends transfers among the
//! producers' accounts, submitted to every producer as a transactions topic would.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bitcoin::secp256k1::{Keypair, SECP256K1};
use futures::future::join_all;
use tenure_chain::{
    block::{AccountId, ChainState, TermContext, Transfer},
    produce::{Approvals, Producer, ProducerConfig, ProducerId},
    rewards,
    tenure_change::consensus_hash,
};
use tenure_frost_fed::{
    MemberId, Roster,
    channel::{ChannelKey, noise_keypair},
};
use tenure_overlay::{
    OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Service, Topic, localnet,
};

use crate::{
    federation::{self, FedHandle},
    producer::{self, ProducerHandle, ProducerStatus},
};

/// The network name producers sign under.
pub const NETWORK: &str = "testnet";

/// The term the testnet produces.
const TERM: u64 = 1;

/// The term's coinbase, in all.
const COINBASE: u64 = 100_000_000;

/// The events of one node a producer set needs, split from the node's stream.
pub struct ProducerEvents {
    federation: OverlayEvents,
    blocks: OverlayEvents,
}

/// Splits `events`: federation frames and blocks-topic messages for the producer,
/// everything else returned for the node's own loop.
pub fn split_events(events: OverlayEvents) -> (ProducerEvents, OverlayEvents) {
    let (ours, rest) = events.split(4096, |e| {
        matches!(
            e,
            OverlayEvent::Gossip {
                topic: Topic::FederationFrames | Topic::Blocks,
                ..
            } | OverlayEvent::InboundRequest {
                service: Service::FederationFrame,
                ..
            }
        )
    });
    let (blocks, federation) = ours.split(4096, |e| {
        matches!(
            e,
            OverlayEvent::Gossip {
                topic: Topic::Blocks,
                ..
            }
        )
    });
    (ProducerEvents { federation, blocks }, rest)
}

/// A running producer set.
pub struct ProducerSet {
    /// Each producer.
    pub producers: Vec<ProducerHandle>,
    /// Each producer's id, in node order.
    pub ids: Vec<ProducerId>,
    /// Each producer's shares of the 100.
    pub weights: Vec<u16>,
    /// How long the term's DKG took.
    pub dkg: Duration,
    /// Each producer's key (its account's, too).
    pub keys: Vec<Keypair>,
    load_on: Arc<AtomicBool>,
}

/// Shares of 100 in proportion to `spends`, largest remainders first.
fn weights_of(spends: &[u64]) -> Vec<u16> {
    let total: u64 = spends.iter().sum::<u64>().max(1);
    let mut weights: Vec<(usize, u16, u64)> = spends
        .iter()
        .enumerate()
        .map(|(i, s)| (i, (s * 100 / total) as u16, (s * 100) % total))
        .collect();
    let left = 100u16.saturating_sub(weights.iter().map(|(_, w, _)| *w).sum());
    weights.sort_by_key(|(i, _, remainder)| (std::cmp::Reverse(*remainder), *i));
    for (_, weight, _) in weights.iter_mut().take(usize::from(left)) {
        *weight += 1;
    }
    weights.sort_by_key(|(i, _, _)| *i);
    weights.into_iter().map(|(_, w, _)| w).collect()
}

impl ProducerSet {
    /// Starts a producer on every node: federation members, the term's DKG, then the
    /// producers ([`ProducerSet::start_load`] starts the load generator).
    pub async fn start(
        overlays: &[OverlayHandle],
        events: Vec<ProducerEvents>,
    ) -> anyhow::Result<ProducerSet> {
        let n = overlays.len();
        anyhow::ensure!(
            (2..=100).contains(&n),
            "a producer set has 2 to 100 producers"
        );
        let spends: Vec<u64> = (0..n).map(|i| (n - i) as u64).collect();
        let weights = weights_of(&spends);
        anyhow::ensure!(
            weights.iter().all(|w| *w > 0),
            "too many producers for 100 shares"
        );
        let keypairs: Vec<Keypair> = (0..n)
            .map(|_| Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng()))
            .collect();
        let mut noise = Vec::with_capacity(n);
        let mut directory = Vec::with_capacity(n);
        for (overlay, keypair) in overlays.iter().zip(&keypairs) {
            let (private, public) = noise_keypair().context("noise key")?;
            directory.push(ChannelKey::bind(
                keypair,
                public,
                overlay.peer_id().to_bytes(),
            ));
            noise.push(private);
        }
        let approvals: Vec<Approvals> = (0..n).map(|_| Approvals::default()).collect();
        let mut members: Vec<FedHandle> = Vec::with_capacity(n);
        let mut blocks_events = Vec::with_capacity(n);
        for (((overlay, events), keypair), (private, approvals)) in overlays
            .iter()
            .zip(events)
            .zip(&keypairs)
            .zip(noise.into_iter().zip(approvals.iter().cloned()))
        {
            let validator = move |payload: &[u8]| approvals.approve(payload, NETWORK);
            members.push(
                federation::spawn(
                    overlay.clone(),
                    events.federation,
                    *keypair,
                    private,
                    directory.clone(),
                    validator,
                    None,
                )
                .await?,
            );
            blocks_events.push(events.blocks);
        }
        // Members send frames directly once everyone is connected to everyone.
        localnet::wait_for_peers(overlays, n - 1, Duration::from_secs(30)).await?;

        let ids: Vec<MemberId> = directory.iter().map(|k| k.member).collect();
        let roster = Roster::new(
            ids.iter().copied().zip(weights.iter().copied()).collect(),
            100,
            67,
        )?;
        let started = std::time::Instant::now();
        let keys = join_all(
            members
                .iter()
                .map(|m| m.dkg(roster.clone(), b"testnet term 1".to_vec(), 0)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("the term's DKG")?;
        let dkg = started.elapsed();
        let key = keys.first().context("no key")?;

        let producer_ids: Vec<ProducerId> = keypairs
            .iter()
            .map(|k| ProducerId::of(&k.x_only_public_key().0))
            .collect();
        let accounts: Vec<AccountId> = producer_ids.iter().map(|p| AccountId(p.0)).collect();
        let share_owners = (1..=100u16)
            .map(|s| {
                roster
                    .holder_of(s)
                    .and_then(|holder| ids.iter().position(|m| *m == holder))
                    .map(|i| i as u16)
                    .context("a share without a holder")
            })
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let context = TermContext {
            term: TERM,
            producer_key: key.output_key()?,
            producer_shares: key.public.clone(),
            stacker_key: None,
            coinbase: accounts
                .iter()
                .copied()
                .zip(rewards::coinbase(COINBASE, &spends))
                .collect(),
            cost_limit: 10_000_000,
            consensus_hash: consensus_hash(TERM, &[1; 32]),
            previous_consensus_hash: consensus_hash(TERM - 1, &[0; 32]),
            producers: accounts
                .iter()
                .copied()
                .zip(spends.iter().copied())
                .collect(),
            share_owners,
        };
        let by_peer: BTreeMap<PeerId, ProducerId> = overlays
            .iter()
            .map(|o| o.peer_id())
            .zip(producer_ids.iter().copied())
            .collect();
        let mut producers = Vec::with_capacity(n);
        for (((overlay, events), federation), (keypair, approvals)) in overlays
            .iter()
            .zip(blocks_events)
            .zip(members)
            .zip(keypairs.iter().zip(approvals))
        {
            let producer = Producer::new(
                NETWORK,
                *keypair,
                context.clone(),
                ChainState::default(),
                ProducerConfig::default(),
                approvals,
                std::time::Instant::now(),
                &mut rand_core::OsRng,
            );
            producers.push(
                producer::spawn(
                    overlay.clone(),
                    events,
                    federation,
                    producer,
                    by_peer.clone(),
                )
                .await?,
            );
        }
        Ok(ProducerSet {
            producers,
            ids: producer_ids,
            weights,
            dkg,
            keys: keypairs,
            load_on: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Every producer's status, in node order.
    pub fn statuses(&self) -> Vec<ProducerStatus> {
        self.producers.iter().map(ProducerHandle::status).collect()
    }

    /// Starts the load generator.
    pub fn start_load(&self) {
        self.load_on.store(true, Ordering::Relaxed);
        tokio::spawn(load(
            self.producers.clone(),
            self.keys.clone(),
            self.load_on.clone(),
        ));
    }

    /// Stops the load generator.
    pub fn stop_load(&self) {
        self.load_on.store(false, Ordering::Relaxed);
    }
}

/// Transfers among the producers' accounts, about 200 a second once the term's first
/// block funded them, each submitted to every producer. A sender whose transfers the
/// chain has not taken within 32 nonces starts again from its nonce on chain (a
/// transfer lost on the way would otherwise hold back all its later ones).
async fn load(producers: Vec<ProducerHandle>, keys: Vec<Keypair>, on: Arc<AtomicBool>) {
    // (key, account, next nonce) of every sender, and where it sends.
    let mut senders: Vec<(Keypair, AccountId, u64)> = keys
        .iter()
        .map(|k| (*k, AccountId::of(&k.x_only_public_key().0), 0))
        .collect();
    let recipients: Vec<AccountId> = senders
        .iter()
        .cycle()
        .skip(1)
        .take(senders.len())
        .map(|(_, a, _)| *a)
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    while on.load(Ordering::Relaxed) {
        tick.tick().await;
        let Some(state) = producers
            .iter()
            .map(ProducerHandle::state)
            .max_by_key(|s| s.height)
            .filter(|s| s.height >= 1)
        else {
            continue;
        };
        let count = senders.len().max(1);
        for _ in 0..2 {
            let index = (sent as usize) % count;
            let (Some((key, account, next)), Some(to)) =
                (senders.get_mut(index), recipients.get(index))
            else {
                break;
            };
            let on_chain = state.accounts.get(account).map_or(0, |a| a.nonce);
            if *next < on_chain || *next > on_chain + 32 {
                *next = on_chain;
            }
            let transfer = Transfer::sign(NETWORK, key, *to, 1_000, 1 + sent % 10, *next);
            *next += 1;
            sent += 1;
            for producer in &producers {
                producer.submit(transfer.clone());
            }
        }
    }
}
