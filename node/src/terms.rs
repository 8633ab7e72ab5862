//! A producer node's terms, driven by its burnchain view: once the burnchain names the
//! next term's producers, the node runs the term's weighted DKG with them (retried
//! without the members a failed attempt blamed), certifies the key it made, and at the
//! term's first burn block moves its federation member and its producer to the new
//! key ([`tenure_chain::produce::Producer::begin_term`]). No rule lives here; this
//! module wires. The testnet's schedule ([`crate::testnet::terms`]) and `tenure node`
//! run the same driver.
//!
//! - **During term N − 1** (N ≥ [`FIRST_TERM`]): once term N − 2 has ended, the scan
//!   gives term N's producers and shares; they run the DKG for term N's key while
//!   term N − 1 still signs with its own ([`crate::federation::FedHandle::dkg_next`]).
//!   It starts with term N − 1: tried waiting for term N − 1's first block instead
//!   (so the DKG would not compete with that block's two signatures), 10 producers
//!   then had their first leaders deposed in every term, since the DKG landed on the
//!   signatures instead of finishing before them. The DKG waits (at most
//!   [`CONTACT_WAIT`]) until the node took the contact of every member of its roster
//!   ([`crate::contacts`]). A failed DKG is retried without the members it blamed (at
//!   most [`DKG_ATTEMPTS`] attempts), shares reassigned among the rest with the same
//!   seed.
//! - **The term UTXO.** Once term N's key is made, the first member of its roster pays
//!   the key's taproot output from its wallet before term N starts, and every node's
//!   scan looks for it ([`TermKey`]; the scan rewinds to term N − 1 and scans again,
//!   in case the payment was mined before the node knew the key).
//! - **The key made public.** Each producer that made term N's key signs its record
//!   ([`tenure_chain::produce::term_key`]) and gossips the certificate on the
//!   term-keys topic when the key is made and again at term N's start; its own
//!   context is the one every follower derives from the record.
//! - **Announcements.** At every burn block the term's leader asks the group to sign
//!   an announcement of its tip spending the term UTXO
//!   ([`tenure_chain::produce::announce`]); the signed transaction goes to the node's
//!   loop, which relays it to the miner.
//! - **At term N's first burn block** the node switches its member to term N's key
//!   and its producer to term N; term N's first block carries its `BlockFound`.
//!
//! The DKG context names the network, the term and its plan's seed, so a key cannot be
//! replayed into another term.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bitcoin::{ScriptBuf, Transaction, secp256k1::Keypair};
use tenure_chain::{
    block::{ChainState, TermContext},
    produce::{
        Approvals, BurnScan, Producer, ProducerConfig, ProducerId, TermPlan, announce,
        term_key::{KeyCertificate, TermKeyRecord, roster_of},
    },
};
use tenure_frost_fed::{KeyShare, MemberId, Roster};
use tenure_overlay::{OverlayEvents, OverlayHandle, Topic};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::{
    contacts::PeerDirectory,
    federation::{DkgError, FedHandle},
    follower, logs,
    producer::{self, ProducerHandle, ProducerStreams},
};

/// The first term with producers: enrollments start in term 1 and choose term 3.
pub const FIRST_TERM: u64 = 3;

/// How long a term's DKG waits for its members' contacts before it starts anyway.
pub const CONTACT_WAIT: Duration = Duration::from_secs(10);

/// DKG attempts per term before the term is given up.
pub const DKG_ATTEMPTS: u32 = 3;

/// What one term was, as one node saw it.
#[derive(Clone, Debug, Default)]
pub struct TermReport {
    /// The term.
    pub term: u64,
    /// Shares of each node, in node order (0: not a producer of the term).
    pub shares: Vec<u16>,
    /// How long its DKG took, all attempts.
    pub dkg: Duration,
    /// DKG attempts made.
    pub attempts: u32,
    /// Members left out after a failed attempt (node indices).
    pub excluded: Vec<usize>,
}

/// The reports of every term, shared by the nodes' drivers (the first to finish a
/// term's DKG writes it).
pub type TermReports = Arc<Mutex<BTreeMap<u64, TermReport>>>;

/// What a node's term driver needs.
pub struct TermDriver {
    /// The network producers sign on.
    pub network: &'static str,
    /// The node's index (its name in logs and reports).
    pub index: usize,
    /// The producer's key (enrollment signing key, federation member, account).
    pub keypair: Keypair,
    /// The node's overlay.
    pub overlay: OverlayHandle,
    /// Its blocks-topic events, for its producer.
    pub blocks: OverlayEvents,
    /// Its federation member.
    pub federation: FedHandle,
    /// Shared with the member's validator.
    pub approvals: Approvals,
    /// Overlay peers to producers, filled from the producers' contacts.
    pub directory: PeerDirectory,
    /// The producer keys the reports name by index (a node alone: its own).
    pub keys: Vec<Keypair>,
    /// Where the node's producer is published once it starts.
    pub slot: Arc<OnceLock<ProducerHandle>>,
    /// Term reports.
    pub reports: TermReports,
    /// Burn transactions (announcements) to the node's loop, which relays them.
    pub burn_txs: mpsc::Sender<Transaction>,
    /// Term keys to the node's burnchain loop, which scans for their UTXOs.
    pub term_keys: mpsc::Sender<TermKey>,
}

/// A term's key, for the node's burnchain loop: it scans for the term's UTXO, and
/// the node that `fund`s pays it.
#[derive(Clone, Debug)]
pub struct TermKey {
    /// The term.
    pub term: u64,
    /// Its UTXO's script.
    pub script: ScriptBuf,
    /// Whether this node pays the term UTXO: the first member of the term's roster.
    pub fund: bool,
}

/// A term key made: the term's context and this member's share.
struct Made {
    context: TermContext,
    key: Arc<KeyShare>,
    fund: bool,
    /// This producer's certificate of the key, gossiped for every node.
    certificate: KeyCertificate,
}

impl TermDriver {
    /// Runs until the node's burn scans stop.
    pub async fn run(self, mut scans: watch::Receiver<Arc<BurnScan>>) {
        let (made_tx, mut made_rx) = mpsc::channel::<(u64, Option<Made>)>(4);
        let mut asked: BTreeSet<u64> = BTreeSet::new();
        let mut ready: BTreeMap<u64, Made> = BTreeMap::new();
        let mut current: Option<u64> = None;
        let mut events = Some(self.blocks);
        // Every producer forwards the term keys' certificates, for the followers.
        if let Err(e) = self
            .overlay
            .subscribe(
                Topic::TermKeys,
                follower::validate_certificate(self.network, scans.clone()),
            )
            .await
        {
            tracing::warn!(target: logs::PRODUCER, %e, "term keys not subscribed");
        }
        loop {
            tokio::select! {
                changed = scans.changed() => if changed.is_err() { return },
                Some((term, made)) = made_rx.recv() => {
                    if let Some(made) = made {
                        publish(&self.overlay, &made.certificate).await;
                        let _ = self.term_keys.send(TermKey {
                            term,
                            script: announce::term_script(&made.context.producer_key),
                            fund: made.fund,
                        }).await;
                        ready.insert(term, made);
                    }
                }
            }
            let scan = scans.borrow_and_update().clone();
            let Some(now) = scan.term() else { continue };
            if let (Some(handle), Some(term)) = (self.slot.get(), current) {
                handle.burn_block(scan.term_utxo(term));
            }
            // The next term's key, once the burnchain names its producers.
            let next = now.saturating_add(1);
            if next >= FIRST_TERM
                && !asked.contains(&next)
                && let Some(plan) = scan.plan(next)
            {
                asked.insert(next);
                let job = KeyJob {
                    network: self.network,
                    index: self.index,
                    directory: self.directory.clone(),
                    federation: self.federation.clone(),
                    keys: self.keys.clone(),
                    me: self.keypair,
                    reports: self.reports.clone(),
                    previous_consensus: scan.consensus_block(next.saturating_sub(1)),
                };
                let made_tx = made_tx.clone();
                tokio::spawn(async move {
                    let made = job.make(plan).await;
                    let _ = made_tx.send((next, made)).await;
                });
            }
            // The term the burnchain is in, once its key is made.
            if current.is_none_or(|c| c < now)
                && let Some(made) = ready.remove(&now)
            {
                self.federation.use_key(made.key).await;
                // Again at the term's start, signed afresh (gossip drops a message it
                // has seen), for followers that were not listening before.
                publish(
                    &self.overlay,
                    &KeyCertificate::sign(
                        self.network,
                        made.certificate.record.clone(),
                        &self.keypair,
                    ),
                )
                .await;
                match self.slot.get() {
                    Some(handle) => handle.begin_term(made.context).await,
                    None => {
                        let Some(blocks) = events.take() else { return };
                        let producer = Producer::new(
                            self.network,
                            self.keypair,
                            made.context,
                            ChainState::default(),
                            ProducerConfig::default(),
                            self.approvals.clone(),
                            Instant::now(),
                            &mut rand_core::OsRng,
                        );
                        match producer::spawn(
                            self.overlay.clone(),
                            ProducerStreams::split(blocks),
                            self.federation.clone(),
                            producer,
                            self.directory.clone(),
                            Some(self.burn_txs.clone()),
                            None,
                        )
                        .await
                        {
                            Ok(handle) => {
                                let _ = self.slot.set(handle);
                            }
                            Err(e) => {
                                tracing::warn!(target: logs::PRODUCER, %e, "producer not started");
                                return;
                            }
                        }
                    }
                }
                info!(target: logs::PRODUCER, node = self.index, term = now, "term begins");
                current = Some(now);
                ready.retain(|t, _| *t > now);
            }
        }
    }
}

/// Gossips a producer's certificate of a term's key.
async fn publish(overlay: &OverlayHandle, certificate: &KeyCertificate) {
    match certificate.to_bytes() {
        Ok(bytes) => {
            if let Err(e) = overlay.publish(Topic::TermKeys, bytes).await {
                debug!(target: logs::PRODUCER, %e, "term key certificate not published");
            }
        }
        Err(e) => debug!(target: logs::PRODUCER, %e, "term key certificate not encoded"),
    }
}

/// Making one term's key.
struct KeyJob {
    network: &'static str,
    index: usize,
    /// Whose contacts this node took: the DKG waits for its roster's.
    directory: PeerDirectory,
    federation: FedHandle,
    keys: Vec<Keypair>,
    me: Keypair,
    reports: TermReports,
    previous_consensus: Option<[u8; 32]>,
}

impl KeyJob {
    /// Runs the term's DKG, retried without blamed members; `None` if this node is
    /// not a producer of the term or no attempt succeeded.
    async fn make(self, plan: TermPlan) -> Option<Made> {
        let started = Instant::now();
        let mut excluded: BTreeSet<MemberId> = BTreeSet::new();
        let me = MemberId::from(self.me.x_only_public_key().0);
        let mut context_bytes = format!("{} term {}", self.network, plan.term).into_bytes();
        context_bytes.extend_from_slice(&plan.seed);
        for attempt in 0..DKG_ATTEMPTS {
            let roster = roster_of(&plan, &excluded).ok()?.roster;
            if roster.weight_of(&me) == 0 {
                return None;
            }
            self.await_contacts(&roster).await;
            match self
                .federation
                .dkg_next(roster.clone(), context_bytes.clone(), attempt)
                .await
            {
                Ok(key) => {
                    let record = TermKeyRecord::new(
                        plan.term,
                        plan.seed,
                        &excluded,
                        key.transcript,
                        &key.public,
                    )
                    .ok()?;
                    // The context every node derives from the record: a producer
                    // validates with the same one as a follower.
                    let context = record.context(&plan, self.previous_consensus).ok()?;
                    let certificate = KeyCertificate::sign(self.network, record, &self.me);
                    self.report(plan.term, &roster, started.elapsed(), attempt, &excluded);
                    let fund = roster.members().first().is_some_and(|(m, _)| *m == me);
                    return Some(Made {
                        context,
                        key,
                        fund,
                        certificate,
                    });
                }
                Err(DkgError::Failed(failure)) => {
                    info!(target: logs::FED_DKG, term = plan.term, attempt, %failure, "term DKG failed; retrying without the blamed");
                    if failure.blamed.is_empty() {
                        return None;
                    }
                    excluded.extend(failure.blamed);
                }
                Err(e) => {
                    debug!(target: logs::FED_DKG, term = plan.term, %e, "term DKG stopped");
                    return None;
                }
            }
        }
        None
    }

    /// Waits until this node took the contact of every member of `roster`, at most
    /// [`CONTACT_WAIT`]: frames to a member whose channel is not known yet would be
    /// lost, and the member blamed for silence. Past the wait the DKG starts anyway
    /// (a member that never published its contact is then blamed, and the retry goes
    /// on without it).
    async fn await_contacts(&self, roster: &Roster) {
        let started = Instant::now();
        let missing = || {
            roster
                .members()
                .iter()
                .filter_map(|(m, _)| m.key())
                .filter(|k| self.directory.peer_of(&ProducerId::of(k)).is_none())
                .count()
        };
        while missing() > 0 && started.elapsed() < CONTACT_WAIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let missing = missing();
        if missing > 0 {
            info!(target: logs::FED_DKG, node = self.index, missing, "term DKG starts without every member's contact");
        }
    }

    fn report(
        &self,
        term: u64,
        roster: &Roster,
        dkg: Duration,
        attempt: u32,
        excluded: &BTreeSet<MemberId>,
    ) {
        let node_of = |m: &MemberId| {
            self.keys
                .iter()
                .position(|k| MemberId::from(k.x_only_public_key().0) == *m)
        };
        let mut shares = vec![0u16; self.keys.len()];
        for (member, weight) in roster.members() {
            if let Some(slot) = node_of(member).and_then(|i| shares.get_mut(i)) {
                *slot = *weight;
            }
        }
        if let Ok(mut reports) = self.reports.lock() {
            reports.entry(term).or_insert_with(|| TermReport {
                term,
                shares,
                dkg,
                attempts: attempt.saturating_add(1),
                excluded: excluded.iter().filter_map(node_of).collect(),
            });
        }
        debug!(target: logs::FED_DKG, node = self.index, term, ms = dkg.as_millis() as u64, "term key made");
    }
}
