//! A node that follows the chain without producing: drives
//! [`tenure_chain::produce::follower::Follower`] (which states the rules) with the
//! node's burnchain scans, the term-keys topic and the blocks topic.
//!
//! The term-keys topic's validator ([`validate_certificate`]) forwards only
//! certificates of the term's producers, as the node's own burnchain view names them,
//! whose signature verifies, and only a few per producer and term
//! ([`CertificateGate`]): a peer without a producer key cannot get a certificate past
//! its first hop. Whether the member is in the key's roster, and what it certified,
//! is the follower's check.
//!
//! Blocks gossip did not bring are asked for by request-response from a peer that
//! published blocks: at once when a block waits for a parent it never got, and, with
//! no gap in sight, once gossip has been quiet for three seconds (the last blocks
//! before production paused may never have reached this node). The answer carries
//! the key proofs of its blocks' terms, so a follower that joined after a term's
//! certificates were gossiped still follows it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use bitcoin::XOnlyPublicKey;
use tenure_chain::produce::{
    BurnScan, PRODUCER_MESSAGE_VERSION, ProducerBody, ProducerMessage, TermPlan,
    follower::{BlockBatch, Followed, Follower},
    term_key::{CertificateGate, GateVerdict, KeyCertificate},
};
use tenure_overlay::{
    GossipValidator, OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Service, Topic, Verdict,
};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::logs;

/// The term-keys topic's validator on `network`: [`CertificateGate`] with the plan of
/// the certificate's term from the node's burnchain view (`scans`).
pub fn validate_certificate(
    network: &'static str,
    scans: watch::Receiver<Arc<BurnScan>>,
) -> Arc<dyn GossipValidator> {
    let gate = Mutex::new(GateState {
        gate: CertificateGate::new(network),
        scan: None,
        plans: BTreeMap::new(),
    });
    Arc::new(move |_: Option<PeerId>, data: &[u8]| {
        let certificate = match KeyCertificate::from_bytes(data) {
            Ok(certificate) => certificate,
            Err(e) => return Verdict::Reject(e.to_string()),
        };
        let scan = scans.borrow().clone();
        let mut state = gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Plans are computed once per scan, and only for the current and next term:
        // a flood of certificates costs a lookup each, not a selection.
        if !state.scan.as_ref().is_some_and(|s| Arc::ptr_eq(s, &scan)) {
            state.plans.clear();
            state.scan = Some(scan.clone());
        }
        let term = certificate.record.term;
        let judged = scan
            .term()
            .is_some_and(|now| term == now || term == now.saturating_add(1));
        let plan = if judged {
            state
                .plans
                .entry(term)
                .or_insert_with(|| scan.plan(term))
                .clone()
        } else {
            None
        };
        let verdict = state.gate.judge(&certificate, plan.as_ref());
        match verdict {
            GateVerdict::Forward => Verdict::Accept,
            GateVerdict::Ignore => Verdict::Ignore("not judged here, or forwarded enough".into()),
            GateVerdict::Reject(e) => Verdict::Reject(e.to_string()),
        }
    })
}

/// The term-keys validator's state: the gate, and the plans of the scan it last saw.
struct GateState {
    gate: CertificateGate,
    scan: Option<Arc<BurnScan>>,
    plans: BTreeMap<u64, Option<TermPlan>>,
}

/// Whether `event` is one the follower takes.
pub fn wants(event: &OverlayEvent) -> bool {
    matches!(
        event,
        OverlayEvent::Gossip {
            topic: Topic::Blocks | Topic::TermKeys,
            ..
        }
    )
}

/// What the follower has, for progress and the summary.
#[derive(Clone, Debug, Default)]
pub struct FollowerStatus {
    /// Height of its best tip.
    pub height: u64,
    /// The tip's hash.
    pub tip: [u8; 32],
    /// The tip's term.
    pub term: u64,
    /// Terms whose key it accepted from certificates.
    pub terms_certified: Vec<u64>,
    /// Blocks refused as invalid.
    pub refused_blocks: u64,
    /// Certificates refused.
    pub refused_certificates: u64,
    /// Blocks waiting for a parent or a term key.
    pub waiting: usize,
}

/// The term keys a follower accepted, shared with its blocks-topic validator.
pub type AcceptedKeys = Arc<RwLock<BTreeMap<u64, XOnlyPublicKey>>>;

/// The blocks topic's validator on a follower: a signed block is forwarded when the
/// group signature verifies under its term's accepted key (rejected, and its sender
/// blamed, when it does not; ignored while the term's key is not accepted here), so a
/// follower needs no list of the producers' peers and a peer without the group's key
/// cannot get a block past it. The follower takes nothing else on the topic (the
/// producers' election and proposals stay among the producers).
pub fn validate_block(keys: AcceptedKeys) -> Arc<dyn GossipValidator> {
    Arc::new(move |_: Option<PeerId>, data: &[u8]| {
        let message = match ProducerMessage::from_bytes(data) {
            Ok(message) => message,
            Err(e) => return Verdict::Reject(e.to_string()),
        };
        let ProducerBody::Block(block) = message.body else {
            return Verdict::Ignore("a followers takes signed blocks only".into());
        };
        let key = keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&block.header.term)
            .copied();
        match key {
            Some(key) if block.group_signed_by(&key) => Verdict::Accept,
            Some(_) => Verdict::Reject(format!(
                "block {} is not signed by term {}'s key",
                block.header.height, block.header.term
            )),
            None => Verdict::Ignore("the block's term key is not known here".into()),
        }
    })
}

/// Starts a follower on `overlay` for `network`: `events` are the node's blocks- and
/// term-keys-topic messages (see [`wants`]), `scans` the node's burnchain view. Runs
/// until the events or the scans stop.
pub async fn spawn(
    network: &'static str,
    overlay: &OverlayHandle,
    mut events: OverlayEvents,
    mut scans: watch::Receiver<Arc<BurnScan>>,
) -> anyhow::Result<watch::Receiver<FollowerStatus>> {
    overlay
        .subscribe(
            Topic::TermKeys,
            validate_certificate(network, scans.clone()),
        )
        .await?;
    let keys = AcceptedKeys::default();
    overlay
        .subscribe(Topic::Blocks, validate_block(keys.clone()))
        .await?;
    let (status_tx, status) = watch::channel(FollowerStatus::default());
    let overlay = overlay.clone();
    tokio::spawn(async move {
        let mut follower = Follower::new(network);
        let scan = scans.borrow_and_update().clone();
        on_scan(&mut follower, &scan);
        let mut known_keys = 0usize;
        let mut fetch_tick = tokio::time::interval(FETCH_INTERVAL);
        let (fetched_tx, mut fetched) = mpsc::channel::<Option<BlockBatch>>(1);
        let mut fetching = false;
        // Peers that published blocks lately (producers): whom to ask for a gap.
        let mut sources: VecDeque<PeerId> = VecDeque::new();
        let mut next_source = 0usize;
        // When a block last came by gossip, or blocks were last asked for.
        let mut last_asked = Instant::now();
        loop {
            tokio::select! {
                _ = fetch_tick.tick(), if !fetching => {
                    // A gap is asked for at once; with none, the blocks after the tip
                    // once gossip has been quiet for a while (the last blocks before
                    // production paused may never have reached this node).
                    let wanted = follower.wanted().or_else(|| {
                        (last_asked.elapsed() >= IDLE_ASK).then(|| follower.best().height.saturating_add(1))
                    });
                    if let (Some(from), Some(peer)) = (wanted, sources.get(next_source % sources.len().max(1)).copied()) {
                        last_asked = Instant::now();
                        next_source = next_source.wrapping_add(1);
                        fetching = true;
                        let overlay = overlay.clone();
                        let fetched_tx = fetched_tx.clone();
                        tokio::spawn(async move {
                            let batch = match get_blocks(from).map(|ask| overlay.request(peer, Service::ProducerDirect, ask)) {
                                Some(request) => request.await.ok().and_then(|bytes| BlockBatch::from_bytes(&bytes).ok()),
                                None => None,
                            };
                            let _ = fetched_tx.send(batch).await;
                        });
                    }
                }
                Some(batch) = fetched.recv() => {
                    fetching = false;
                    if let Some(batch) = batch {
                        let (_, refused) = follower.on_batch(batch);
                        for why in refused {
                            debug!(target: logs::PRODUCER, %why, "follower refused part of a fetched batch");
                        }
                    }
                }
                changed = scans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let scan = scans.borrow_and_update().clone();
                    on_scan(&mut follower, &scan);
                }
                event = events.next() => match event {
                    Some(OverlayEvent::Gossip { topic: Topic::TermKeys, data, .. }) => {
                        match KeyCertificate::from_bytes(&data).map_err(|e| e.to_string()).and_then(|c| follower.on_certificate(c).map_err(|e| e.to_string())) {
                            Ok(Some(term)) => {
                                debug!(target: logs::PRODUCER, term, "follower accepted the term's key");

                                follower.retry();
                            }
                            Ok(None) => {}
                            Err(why) => debug!(target: logs::PRODUCER, %why, "follower refused a key certificate"),
                        }
                    }
                    Some(OverlayEvent::Gossip { topic: Topic::Blocks, data, source }) => {
                        if let Some(source) = source
                            && !sources.contains(&source)
                        {
                            sources.push_back(source);
                            if sources.len() > FETCH_SOURCES {
                                sources.pop_front();
                            }
                        }
                        last_asked = Instant::now();
                        if let Ok(ProducerMessage { body: ProducerBody::Block(block), .. }) = ProducerMessage::from_bytes(&data)
                            && let Followed::Refused(e) = follower.on_block(block)
                        {
                            debug!(target: logs::PRODUCER, %e, "follower refused a block");
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
            }
            // The validator forwards blocks of every term whose key is accepted.
            let certified = follower.terms_certified();
            if certified.len() != known_keys {
                known_keys = certified.len();
                let mut shared = keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for term in certified {
                    if let Some(key) = follower.term_key(term) {
                        shared.insert(term, key);
                    }
                }
            }
            let best = follower.best();
            status_tx.send_replace(FollowerStatus {
                height: best.height,
                tip: best.tip,
                term: best.term,
                terms_certified: follower.terms_certified(),
                refused_blocks: follower.refused_blocks(),
                refused_certificates: follower.refused_certificates(),
                waiting: follower.waiting(),
            });
        }
    });
    Ok(status)
}

/// How often a follower with a gap asks a peer for the blocks it misses.
const FETCH_INTERVAL: Duration = Duration::from_millis(500);

/// How long a follower without a gap waits for gossip before it asks a peer for the
/// blocks after its tip anyway.
const IDLE_ASK: Duration = Duration::from_secs(3);

/// Peers that published blocks, remembered to ask for a gap, at most.
const FETCH_SOURCES: usize = 8;

/// A request for the blocks from `from` on.
fn get_blocks(from: u64) -> Option<Vec<u8>> {
    ProducerMessage {
        version: PRODUCER_MESSAGE_VERSION,
        term: 0,
        body: ProducerBody::GetBlocks { from },
    }
    .to_bytes()
    .ok()
}

/// Hands the follower every plan the scan knows that it does not have yet, from the
/// first term with producers to the next, and the current and next terms' again (a
/// plan changed by a reorg replaces the old); a follower that joined late takes the
/// keys of earlier terms from the proofs fetched batches carry.
fn on_scan(follower: &mut Follower, scan: &BurnScan) {
    let Some(now) = scan.term() else { return };
    for term in crate::terms::FIRST_TERM..=now.saturating_add(1) {
        // The current and next terms' plans each time (a reorg may change them).
        if term < now && follower.has_plan(term) {
            continue;
        }
        if let Some(plan) = scan.plan(term) {
            let previous = scan.consensus_block(term.saturating_sub(1));
            if !follower.on_plan(plan, previous).is_empty() {
                follower.retry();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tenure_chain::{
        block::{
            AccountId, ChainState, TermContext,
            build::{self, ProducerGroup},
        },
        produce::PRODUCER_MESSAGE_VERSION,
    };

    use super::*;

    fn message(block: tenure_chain::block::Block) -> Vec<u8> {
        ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: block.header.term,
            body: ProducerBody::Block(block),
        }
        .to_bytes()
        .unwrap()
    }

    #[test]
    fn a_block_is_forwarded_only_under_its_terms_accepted_key() {
        let group = ProducerGroup::shared();
        let context = TermContext {
            term: 3,
            producer_key: group.key(),
            producer_shares: group.public.clone(),
            stacker_key: None,
            coinbase: vec![(AccountId([1; 32]), 100)],
            cost_limit: 50_000,
            consensus_hash: [0; 20],
            previous_consensus_hash: [0; 20],
            producers: vec![(AccountId([1; 32]), 1)],
            share_owners: vec![0; 100],
        };
        let (block, _) = build::term_start(
            &ChainState::default(),
            &context,
            Vec::new(),
            group,
            None,
            "net",
        )
        .unwrap();
        let keys = AcceptedKeys::default();
        let validator = validate_block(keys.clone());
        // Its term's key is not accepted yet: dropped without blame.
        assert!(matches!(
            validator.validate(None, &message(block.clone())),
            Verdict::Ignore(_)
        ));
        keys.write().unwrap().insert(3, group.key());
        assert_eq!(
            validator.validate(None, &message(block.clone())),
            Verdict::Accept
        );
        // A signature that is not the group's, or another term's key: rejected.
        let mut forged = block.clone();
        forged.producer_signature = serde_bytes::ByteBuf::from(vec![7; 64]);
        assert!(matches!(
            validator.validate(None, &message(forged)),
            Verdict::Reject(_)
        ));
        let other = ProducerGroup::generate(2).unwrap();
        keys.write().unwrap().insert(3, other.key());
        assert!(matches!(
            validator.validate(None, &message(block)),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            validator.validate(None, b"junk"),
            Verdict::Reject(_)
        ));
    }
}
