//! The testnet's producer set: every testnet node is a producer with a federation
//! member. With the burnchain ([`ProducerSet::start_terms`], the testnet's), each
//! node enrolls with its own spend and its producer follows the terms the burnchain
//! starts ([`super::terms`]), and the members find each other from the producers'
//! contacts ([`crate::contacts`]). Without it ([`ProducerSet::start`], the
//! benchmark's), the members know each other's channels from the start, make one
//! term's key at once and produce that term.
//!
//! Node `i` of `n` spends `2n - i` units in the benchmark's term; in the testnet's
//! terms the spends rotate, so each term has its own weights ([`spend_of`]). Every
//! producer stays above selection's lower bound of 1% of the total. The term's coinbase pays every
//! producer pro rata by spend; the load generator sends transfers among the
//! producers' accounts, each handed to one producer, which gossips it to the others on
//! the transactions topic.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bitcoin::hashes::Hash as _;
use bitcoin::{
    Transaction,
    secp256k1::{Keypair, SECP256K1},
};
use futures::future::join_all;
use tenure_chain::{
    block::{AccountId, ChainState, Transfer},
    produce::{
        Approvals, BurnScan, Producer, ProducerConfig, ProducerId,
        term_key::{KeyRoster, term_context},
    },
    store::ChainStore,
    tenure_change::consensus_hash,
    terms,
};
use tenure_frost_fed::{
    MemberId, Roster,
    channel::{ChannelKey, noise_keypair},
};
use tenure_overlay::{OverlayEvents, OverlayHandle, PeerId, localnet};
use tokio::sync::{mpsc, watch};

use super::terms::{TermDriver, TermKey, TermReports};
pub use crate::producer::{ProducerEvents, split_events};
use crate::{
    contacts::{Contacts, PeerDirectory},
    federation::{self, FedHandle},
    producer::{self, ProducerHandle, ProducerStatus, ProducerStreams},
};

/// The network name producers sign under.
pub const NETWORK: &str = "testnet";

/// The term the benchmark's producer set produces.
const TERM: u64 = 1;

/// What the load generator pays a faucet account (`tenure testnet --faucet`).
pub const FAUCET_AMOUNT: u64 = 1_000_000;

/// The faucet payment's fee: above any load transfer's, so it replaces one that holds
/// its nonce in a mempool.
const FAUCET_FEE: u64 = 1_000;

/// How long a faucet payment may stay unapplied before it is sent again.
const FAUCET_RETRY: Duration = Duration::from_secs(5);

/// What node `index` of `nodes` spends on its enrollment in term `term`, in
/// satoshis: `2n - i` units, rotated by the term so weights change from term to term.
pub fn spend_of(index: usize, nodes: usize, term: u64) -> u64 {
    let nodes = nodes.max(1);
    let rank = (index + term as usize) % nodes;
    100_000 * (2 * nodes - rank) as u64
}

/// Nodes that run nothing but a producer (the benchmark's, tests'): their handles and
/// producer events; their other events are dropped.
pub fn producers_only(
    nodes: Vec<localnet::LocalNode>,
) -> (Vec<OverlayHandle>, Vec<ProducerEvents>) {
    let handles = nodes.iter().map(|n| n.handle.clone()).collect();
    let events = nodes
        .into_iter()
        .map(|node| {
            let (ours, mut rest) = split_events(node.events);
            tokio::spawn(async move { while rest.next().await.is_some() {} });
            ours
        })
        .collect();
    (handles, events)
}

/// A running producer set.
pub struct ProducerSet {
    /// Each node's producer, once it produces.
    pub producers: Vec<Arc<OnceLock<ProducerHandle>>>,
    /// Each producer's id, in node order.
    pub ids: Vec<ProducerId>,
    /// Each node's federation member, in node order.
    pub members: Vec<MemberId>,
    /// Each producer's shares of the 100 (the benchmark's single term).
    pub weights: Vec<u16>,
    /// How long the single term's DKG took.
    pub dkg: Duration,
    /// Every term's report (the testnet's terms).
    pub reports: TermReports,
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
        ProducerSet::start_with_stores(overlays, events, Vec::new()).await
    }

    /// [`ProducerSet::start`], with a chain store for each of the first nodes (as many
    /// as `stores` holds): those producers store every block they apply and start from
    /// their store's tip.
    pub async fn start_with_stores(
        overlays: &[OverlayHandle],
        events: Vec<ProducerEvents>,
        stores: Vec<ChainStore>,
    ) -> anyhow::Result<ProducerSet> {
        let n = overlays.len();
        anyhow::ensure!(
            (2..=100).contains(&n),
            "a producer set has 2 to 100 producers"
        );
        let spends: Vec<u64> = (0..n).map(|i| spend_of(i, n, 0)).collect();
        let weights = weights_of(&spends);
        anyhow::ensure!(
            weights.iter().all(|w| *w > 0),
            "too many producers for 100 shares"
        );
        let keypairs: Vec<Keypair> = (0..n)
            .map(|_| Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng()))
            .collect();
        // The benchmark has no burnchain to enroll on: its members know each other's
        // channels from the start.
        let Members {
            directory,
            approvals,
            members,
            blocks: blocks_events,
            contacts: _,
        } = Members::start(overlays, events, &keypairs, true).await?;

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
        // The benchmark's term has no burnchain: its producers stand in for a plan.
        let key_roster = KeyRoster {
            roster: roster.clone(),
            members: keypairs
                .iter()
                .zip(&spends)
                .zip(&weights)
                .map(|((k, spend), weight)| {
                    let producer = terms::Producer {
                        producer: k.public_key(),
                        weight: bitcoin::Amount::from_sat(*spend),
                        txid: bitcoin::Txid::all_zeros(),
                    };
                    (producer, *weight)
                })
                .collect(),
        };
        let context = term_context(
            TERM,
            key.public.clone(),
            &key_roster,
            consensus_hash(TERM, &[1; 32]),
            consensus_hash(TERM - 1, &[0; 32]),
        )?;
        let by_peer: BTreeMap<PeerId, ProducerId> = overlays
            .iter()
            .map(|o| o.peer_id())
            .zip(producer_ids.iter().copied())
            .collect();
        let mut producers = Vec::with_capacity(n);
        let mut stores = stores.into_iter();
        for (((overlay, events), federation), (keypair, approvals)) in overlays
            .iter()
            .zip(blocks_events)
            .zip(members)
            .zip(keypairs.iter().zip(approvals))
        {
            let store = stores.next();
            let producer = Producer::new(
                NETWORK,
                *keypair,
                context.clone(),
                store
                    .as_ref()
                    .map_or_else(ChainState::default, |s| s.state().clone()),
                ProducerConfig::default(),
                approvals,
                std::time::Instant::now(),
                &mut rand_core::OsRng,
            );
            let handle = producer::spawn(
                overlay.clone(),
                ProducerStreams::split(events),
                federation,
                producer,
                PeerDirectory::of(by_peer.clone()),
                producer::ProducerOptions {
                    store,
                    ..Default::default()
                },
            )
            .await?;
            producers.push(Arc::new(OnceLock::from(handle)));
        }
        Ok(ProducerSet {
            producers,
            ids: producer_ids,
            members: ids,
            weights,
            dkg,
            reports: TermReports::default(),
            keys: keypairs,
            load_on: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts a producer on every node that follows the terms its node's burn scans
    /// (`scans`) start; `keypairs` are the nodes' producer keys, whose wallets the
    /// nodes enroll from.
    pub async fn start_terms(
        overlays: &[OverlayHandle],
        events: Vec<ProducerEvents>,
        keypairs: Vec<Keypair>,
        scans: Vec<watch::Receiver<Arc<BurnScan>>>,
        burn_txs: Vec<mpsc::Sender<Transaction>>,
        term_keys: Vec<mpsc::Sender<TermKey>>,
    ) -> anyhow::Result<ProducerSet> {
        let n = overlays.len();
        anyhow::ensure!(
            (2..=100).contains(&n)
                && keypairs.len() == n
                && scans.len() == n
                && term_keys.len() == n
                && burn_txs.len() == n,
            "a producer set has 2 to 100 producers, each with a key, a burn scan and a way to the burnchain"
        );
        // Each member starts knowing only its own channel; the others' come from
        // their contacts, which each node takes once its burnchain view holds their
        // enrollments.
        let Members {
            directory,
            approvals,
            members,
            blocks,
            contacts: mut contact_events,
        } = Members::start(overlays, events, &keypairs, false).await?;
        let producer_ids: Vec<ProducerId> = keypairs
            .iter()
            .map(|k| ProducerId::of(&k.x_only_public_key().0))
            .collect();
        let reports = TermReports::default();
        let mut producers = Vec::with_capacity(n);
        for (
            index,
            (((((overlay, blocks), federation), (approvals, scans)), term_keys), burn_txs),
        ) in overlays
            .iter()
            .zip(blocks)
            .zip(members)
            .zip(approvals.into_iter().zip(scans))
            .zip(term_keys)
            .zip(burn_txs)
            .enumerate()
        {
            let slot = Arc::new(OnceLock::new());
            producers.push(slot.clone());
            let keypair = *keypairs.get(index).context("a key per node")?;
            let peers = PeerDirectory::default();
            Contacts {
                network: NETWORK,
                keypair,
                channel: directory
                    .get(index)
                    .cloned()
                    .context("a channel per node")?,
                federation: federation.clone(),
                directory: peers.clone(),
            }
            .spawn(
                overlay,
                contact_events
                    .get_mut(index)
                    .and_then(Option::take)
                    .context("contacts per node")?,
                scans.clone(),
            )
            .await?;
            let driver = TermDriver {
                network: NETWORK,
                index,
                keypair,
                overlay: overlay.clone(),
                blocks,
                federation,
                approvals,
                directory: peers,
                keys: keypairs.clone(),
                slot,
                reports: reports.clone(),
                burn_txs,
                term_keys,
                store: None,
                key_store: None,
                certificates: None,
            };
            tokio::spawn(driver.run(scans));
        }
        Ok(ProducerSet {
            producers,
            ids: producer_ids,
            members: directory.iter().map(|k| k.member).collect(),
            weights: Vec::new(),
            dkg: Duration::ZERO,
            reports,
            keys: keypairs,
            load_on: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The running producers.
    pub fn running(&self) -> Vec<ProducerHandle> {
        self.producers
            .iter()
            .filter_map(|slot| slot.get().cloned())
            .collect()
    }

    /// Every producer's status, in node order (a default status for a producer not
    /// started yet).
    pub fn statuses(&self) -> Vec<ProducerStatus> {
        self.producers
            .iter()
            .map(|slot| slot.get().map(ProducerHandle::status).unwrap_or_default())
            .collect()
    }

    /// Starts the load generator; it first pays `faucet` [`FAUCET_AMOUNT`], if given.
    pub fn start_load(&self, faucet: Option<AccountId>) {
        self.load_on.store(true, Ordering::Relaxed);
        tokio::spawn(load(
            self.producers.clone(),
            self.keys.clone(),
            self.load_on.clone(),
            faucet,
        ));
    }

    /// Stops the load generator.
    pub fn stop_load(&self) {
        self.load_on.store(false, Ordering::Relaxed);
    }
}

/// Transfers among the producers' accounts, about 200 a second once the term's first
/// block funded them, each handed to one producer (in turn), which puts it in its
/// mempool and gossips it on the transactions topic. A sender whose transfers the
/// chain has not taken within 32 nonces starts again from its nonce on chain (a
/// transfer lost on the way would otherwise hold back all its later ones). With a
/// `faucet`, the first sender pays it first and sends again until it is funded.
async fn load(
    slots: Vec<Arc<OnceLock<ProducerHandle>>>,
    keys: Vec<Keypair>,
    on: Arc<AtomicBool>,
    mut faucet: Option<AccountId>,
) {
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
    let mut faucet_sent: Option<std::time::Instant> = None;
    while on.load(Ordering::Relaxed) {
        tick.tick().await;
        let producers: Vec<ProducerHandle> =
            slots.iter().filter_map(|s| s.get().cloned()).collect();
        let Some(state) = producers
            .iter()
            .map(ProducerHandle::state)
            .max_by_key(|s| s.height)
            .filter(|s| s.height >= 1)
        else {
            continue;
        };
        // The faucet's payment, from the first sender, which sends nothing else until
        // the faucet account is funded. A payment lost on the way, or whose nonce
        // another transfer took, is sent again at the sender's nonce on chain: only
        // once the account is unfunded and that nonce was not the payment's, so it is
        // never paid twice.
        if let (Some(to), Some((key, account, next)), Some(producer)) =
            (faucet, senders.first_mut(), producers.first())
        {
            let on_chain = state.accounts.get(account).map_or(0, |a| a.nonce);
            let funded = state
                .accounts
                .get(&to)
                .is_some_and(|a| a.balance > 0 || a.nonce > 0);
            if funded {
                *next = on_chain;
                faucet = None;
            } else if faucet_sent.is_none_or(|at| at.elapsed() >= FAUCET_RETRY) {
                let payment = Transfer::sign(NETWORK, key, to, FAUCET_AMOUNT, FAUCET_FEE, on_chain);
                producer.broadcast(payment).await;
                faucet_sent = Some(std::time::Instant::now());
            }
        }
        let count = senders.len().max(1);
        for _ in 0..2 {
            let index = (sent as usize) % count;
            let (Some((key, account, next)), Some(to)) =
                (senders.get_mut(index), recipients.get(index))
            else {
                break;
            };
            if index == 0 && faucet.is_some() {
                sent += 1;
                continue;
            }
            let on_chain = state.accounts.get(account).map_or(0, |a| a.nonce);
            if *next < on_chain || *next > on_chain + 32 {
                *next = on_chain;
            }
            let transfer = Transfer::sign(NETWORK, key, *to, 1_000, 1 + sent % 10, *next);
            *next += 1;
            sent += 1;
            if let Some(producer) = producers.get((sent as usize) % producers.len()) {
                producer.broadcast(transfer).await;
            }
        }
    }
}

/// Every node's federation member, started.
struct Members {
    /// Every member's channel key.
    directory: Vec<ChannelKey>,
    /// What each member's validator approves.
    approvals: Vec<Approvals>,
    /// Each node's member.
    members: Vec<FedHandle>,
    /// Each node's blocks-topic events.
    blocks: Vec<OverlayEvents>,
    /// Each node's contacts-topic events.
    contacts: Vec<Option<OverlayEvents>>,
}

impl Members {
    /// Starts a member on every node, each approving what its producer allows, and
    /// waits until every node is connected to every other (members send frames
    /// directly). Each member knows every member's channel from the start when
    /// `known`, else only its own (the others' arrive as contacts); `directory` holds
    /// every member's either way, in node order.
    async fn start(
        overlays: &[OverlayHandle],
        events: Vec<ProducerEvents>,
        keypairs: &[Keypair],
        known: bool,
    ) -> anyhow::Result<Members> {
        let n = overlays.len();
        let mut noise = Vec::with_capacity(n);
        let mut directory = Vec::with_capacity(n);
        for (overlay, keypair) in overlays.iter().zip(keypairs) {
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
        let mut contacts = Vec::with_capacity(n);
        for ((((overlay, events), keypair), (private, approvals)), own) in overlays
            .iter()
            .zip(events)
            .zip(keypairs)
            .zip(noise.into_iter().zip(approvals.iter().cloned()))
            .zip(&directory)
        {
            let validator = move |payload: &[u8]| approvals.approve(payload, NETWORK);
            let channels = if known {
                directory.clone()
            } else {
                vec![own.clone()]
            };
            members.push(
                federation::spawn(
                    overlay.clone(),
                    events.federation,
                    *keypair,
                    private,
                    channels,
                    validator,
                    None,
                )
                .await?,
            );
            blocks_events.push(events.blocks);
            contacts.push(Some(events.contacts));
        }
        localnet::wait_for_peers(
            overlays,
            n - 1,
            crate::federation::local::connect_deadline(n),
        )
        .await?;
        Ok(Members {
            directory,
            approvals,
            members,
            blocks: blocks_events,
            contacts,
        })
    }
}
