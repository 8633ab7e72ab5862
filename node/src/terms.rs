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
//! - **Terms it is not in.** The node keeps a term key book
//!   ([`tenure_chain::produce::key_book`]) from the term-keys topic and from proofs it
//!   asks producers for ([`SharedKeyBook`]). Its producer starts at the first term
//!   whose context it has, made or certified: a node that is not a producer of the
//!   term (it restarted and lost its shares, or was not chosen) follows it, applying
//!   its blocks without a vote, and produces again from the next term it helps make.
//! - **Catching up.** The producer starts from the chain store's tip (a node that
//!   restarted resumes there). While a term between that tip's and the burnchain's has
//!   a plan but no accepted key here, the node asks a producer's peer for the proofs
//!   (`GetTermKeys`, every [`KEY_FETCH_INTERVAL`], doubling to [`KEY_FETCH_MAX`] while
//!   answers bring nothing new) and hands each earlier term's context to its producer
//!   ([`tenure_chain::produce::Producer::learn_term`]), which then takes the blocks
//!   of those terms from the others.
//!
//! The DKG context names the network, the term and its plan's seed, so a key cannot be
//! replayed into another term.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::{Duration, Instant},
};

use bitcoin::{ScriptBuf, Transaction, secp256k1::Keypair};
use tenure_chain::{
    block::{ChainState, TermContext},
    produce::{
        Approvals, BurnScan, PRODUCER_MESSAGE_VERSION, Producer, ProducerBody, ProducerConfig,
        ProducerId, ProducerMessage, TermPlan, announce,
        follower::{BlockBatch, MAX_BATCH_PROOFS},
        key_book::TermKeyBook,
        term_key::{KeyCertificate, TermKeyRecord, roster_of},
    },
    store::ChainStore,
};
use tenure_frost_fed::{KeyShare, MemberId, Roster, store::KeyStore};
use tenure_overlay::{OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Service, Topic};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::{
    contacts::PeerDirectory,
    federation::{DkgError, FedHandle},
    follower, logs,
    producer::{self, ProducerHandle, ProducerOptions, ProducerStreams},
};

/// A node's term key book, shared by its term driver (which fills it) and its
/// producer (which sends its proofs on).
pub type SharedKeyBook = Arc<RwLock<TermKeyBook>>;

/// How often a node missing an earlier term's key asks a producer for the proofs, at
/// first.
pub const KEY_FETCH_INTERVAL: Duration = Duration::from_secs(2);

/// The longest wait between two asks, once answers bring nothing new.
pub const KEY_FETCH_MAX: Duration = Duration::from_secs(60);

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
    /// The chain store the producer starts from and writes to (`tenure node`).
    pub store: Option<ChainStore>,
    /// The member's key store (`tenure node`): a node that restarted mid-term takes
    /// its share of the term's key from it.
    pub key_store: Option<KeyStore>,
    /// Where its certificate of each term's key goes at the term's start, for the
    /// producer DB ([`crate::producer_db`]; `tenure node`).
    pub certificates: Option<mpsc::Sender<KeyCertificate>>,
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
        let (proofs_tx, mut proofs_rx) = mpsc::channel::<Option<BlockBatch>>(1);
        let mut asked: BTreeSet<u64> = BTreeSet::new();
        let mut ready: BTreeMap<u64, Made> = BTreeMap::new();
        let mut current: Option<u64> = None;
        let book: SharedKeyBook = Arc::new(RwLock::new(TermKeyBook::new(self.network)));
        let (mut certificates, blocks) = self.blocks.split(256, |e| {
            matches!(
                e,
                OverlayEvent::Gossip {
                    topic: Topic::TermKeys,
                    ..
                }
            )
        });
        let mut events = Some(blocks);
        let mut store = self.store;
        // Terms whose key the producer was given, as earlier terms or to begin.
        let mut given: BTreeSet<u64> = BTreeSet::new();
        let mut fetch = KeyFetch::default();
        // Settled terms the burnchain named no producers for.
        let mut unplanned: BTreeSet<u64> = BTreeSet::new();
        let mut fetch_tick = tokio::time::interval(KEY_FETCH_INTERVAL);
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
                Some(event) = certificates.next() => {
                    if let OverlayEvent::Gossip { data, .. } = event
                        && let Ok(certificate) = KeyCertificate::from_bytes(&data)
                        && let Err(e) = lock(&book).on_certificate(certificate)
                    {
                        debug!(target: logs::PRODUCER, %e, "term key certificate not taken");
                    }
                }
                Some(batch) = proofs_rx.recv() => {
                    fetch.asking = false;
                    let before = lock(&book).terms_certified().len();
                    for proof in batch.map(|b| b.proofs).unwrap_or_default().iter().take(MAX_BATCH_PROOFS) {
                        if let Err(e) = lock(&book).on_proof(proof) {
                            debug!(target: logs::PRODUCER, %e, "term key proof refused");
                        }
                    }
                    fetch.answered(lock(&book).terms_certified().len() > before);
                }
                _ = fetch_tick.tick(), if !fetch.asking => {}
            }
            let scan = scans.borrow_and_update().clone();
            let Some(now) = scan.term() else { continue };
            if let (Some(handle), Some(term)) = (self.slot.get(), current) {
                handle.burn_block(scan.term_utxo(term));
            }
            // Every term's plan, for the book to check certificates and proofs against:
            // the current and next terms' each time (a reorg may change them), earlier
            // ones once (a term that never had a plan is not worked out again).
            {
                let mut book = lock(&book);
                for term in FIRST_TERM..=now.saturating_add(1) {
                    let settled = term < now;
                    if settled && (book.has_plan(term) || unplanned.contains(&term)) {
                        continue;
                    }
                    match scan.plan(term) {
                        Some(plan) => {
                            book.on_plan(plan, scan.consensus_block(term.saturating_sub(1)));
                        }
                        None if settled => {
                            unplanned.insert(term);
                        }
                        None => {}
                    }
                }
                book.forget_certificates_before(now.saturating_sub(1));
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
            // This term's key share, once this node made it.
            let made = ready.remove(&now);
            let made_context = match made {
                Some(made) => {
                    self.federation.use_key(made.key).await;
                    // Again at the term's start, signed afresh (gossip drops a message
                    // it has seen), for followers that were not listening before; and
                    // into the producer DB, now the term's policy is in force.
                    let again = KeyCertificate::sign(
                        self.network,
                        made.certificate.record.clone(),
                        &self.keypair,
                    );
                    publish(&self.overlay, &again).await;
                    if let Some(certificates) = &self.certificates {
                        let _ = certificates.send(again).await;
                    }
                    Some(made.context)
                }
                None => None,
            };
            ready.retain(|t, _| *t > now);
            // The term the burnchain is in, once its context is known: from the key
            // this node made, or from the certificates of those that made it.
            let made_here = made_context.is_some();
            if current.is_none_or(|c| c < now)
                && let Some(context) = made_context.or_else(|| lock(&book).context(now).cloned())
            {
                given.insert(now);
                if !made_here {
                    // The node may have made it before a restart: its share is stored.
                    restore_share(
                        self.key_store.as_ref(),
                        &self.federation,
                        &self.keypair,
                        &book,
                        now,
                    )
                    .await;
                    // Its UTXO is looked for all the same (announcements spend it).
                    let _ = self
                        .term_keys
                        .send(TermKey {
                            term: now,
                            script: announce::term_script(&context.producer_key),
                            fund: false,
                        })
                        .await;
                }
                match self.slot.get() {
                    Some(handle) => handle.begin_term(context).await,
                    None => {
                        let Some(blocks) = events.take() else { return };
                        let state = store
                            .as_ref()
                            .map_or_else(ChainState::default, |s| s.state().clone());
                        let mut producer = Producer::new(
                            self.network,
                            self.keypair,
                            context,
                            state,
                            ProducerConfig::default(),
                            self.approvals.clone(),
                            Instant::now(),
                            &mut rand_core::OsRng,
                        );
                        for earlier in lock(&book).contexts_from(producer.state().term) {
                            if earlier.term < now && given.insert(earlier.term) {
                                producer.learn_term(earlier.clone());
                            }
                        }
                        match producer::spawn(
                            self.overlay.clone(),
                            ProducerStreams::split(blocks),
                            self.federation.clone(),
                            producer,
                            self.directory.clone(),
                            ProducerOptions {
                                burn_txs: Some(self.burn_txs.clone()),
                                store: store.take(),
                                book: Some(book.clone()),
                            },
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
            }
            // Earlier terms learned since: the producer catches up through them.
            if let (Some(handle), Some(current)) = (self.slot.get(), current) {
                let tip_term = handle.state().term;
                let learned: Vec<_> = lock(&book)
                    .contexts_from(tip_term)
                    .filter(|c| c.term < current && !given.contains(&c.term))
                    .cloned()
                    .collect();
                for context in learned {
                    given.insert(context.term);
                    handle.learn_term(context).await;
                }
            }
            // Ask for the proofs of terms between the tip's and now that have a plan
            // but no key accepted here.
            let tip_term = self
                .slot
                .get()
                .map(|h| h.state().term)
                .or_else(|| store.as_ref().map(|s| s.state().term))
                .unwrap_or(0)
                .max(FIRST_TERM);
            // Each ask starts at another missing term, so a term whose key was never
            // made (its DKG failed) does not keep the later ones from being asked for.
            let missing = {
                let book = lock(&book);
                let missing: Vec<u64> = (tip_term..=now)
                    .filter(|t| book.has_plan(*t) && book.context(*t).is_none())
                    .collect();
                missing.get(fetch.rotation % missing.len().max(1)).copied()
            };
            if let Some(from) = missing
                && fetch.due()
                && let Some(peer) = self
                    .directory
                    .any_peer(fetch.rotation, &self.overlay.peer_id())
            {
                fetch.asking = true;
                fetch.rotation = fetch.rotation.wrapping_add(1);
                let overlay = self.overlay.clone();
                let proofs_tx = proofs_tx.clone();
                tokio::spawn(async move {
                    let _ = proofs_tx
                        .send(ask_term_keys(&overlay, peer, from).await)
                        .await;
                });
            }
        }
    }
}

/// Takes `me`'s share of `term`'s key from `store`, if it holds one (it made the key
/// before it restarted), and has `federation` sign with it.
async fn restore_share(
    store: Option<&KeyStore>,
    federation: &FedHandle,
    me: &Keypair,
    book: &SharedKeyBook,
    term: u64,
) {
    let Some(store) = store else { return };
    let Some(transcript) = lock(book).proof(term).map(|p| p.record.transcript) else {
        return;
    };
    match store.by_transcript(&transcript) {
        Ok(Some(share)) if share.member == MemberId::from(me.x_only_public_key().0) => {
            info!(target: logs::PRODUCER, term, "term key share restored from the key store");
            federation.use_key(Arc::new(share)).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(target: logs::PRODUCER, term, %e, "key store unreadable"),
    }
}

/// Locks the book (a poisoned lock is taken as it is: the book stays consistent
/// between calls).
fn lock(book: &SharedKeyBook) -> std::sync::RwLockWriteGuard<'_, TermKeyBook> {
    book.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When to ask for term key proofs next.
#[derive(Debug)]
struct KeyFetch {
    /// A request is out.
    asking: bool,
    /// Not before.
    next: Instant,
    /// The wait after the next answer that brings nothing.
    backoff: Duration,
    /// Which producer's peer to ask next.
    rotation: usize,
}

impl Default for KeyFetch {
    fn default() -> KeyFetch {
        KeyFetch {
            asking: false,
            next: Instant::now(),
            backoff: KEY_FETCH_INTERVAL,
            rotation: 0,
        }
    }
}

impl KeyFetch {
    fn due(&self) -> bool {
        !self.asking && Instant::now() >= self.next
    }

    /// An answer came (or the ask failed): `useful` if it brought a term's key.
    fn answered(&mut self, useful: bool) {
        if useful {
            self.backoff = KEY_FETCH_INTERVAL;
        } else {
            self.backoff = (self.backoff * 2).min(KEY_FETCH_MAX);
        }
        self.next = Instant::now() + self.backoff;
    }
}

/// Asks `peer` for the term key proofs from term `from` on.
async fn ask_term_keys(overlay: &OverlayHandle, peer: PeerId, from: u64) -> Option<BlockBatch> {
    let ask = ProducerMessage {
        version: PRODUCER_MESSAGE_VERSION,
        term: 0,
        body: ProducerBody::GetTermKeys { from },
    }
    .to_bytes()
    .ok()?;
    let answer = overlay
        .request(peer, Service::ProducerDirect, ask)
        .await
        .ok()?;
    BlockBatch::from_bytes(&answer).ok()
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
