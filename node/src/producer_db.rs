//! The node's boot producer DB follows its burnchain view (the rules:
//! [`tenure_chain::produce::producer_db`]). At every burn block the driver hands the
//! block to the node's Stacker DBs, whose policies collect garbage at a term's first
//! block; with the term's first block it switches the producer DB's policy to the
//! term's producers' slot keys (and again once the term's plan is known, if it was not
//! when the term began), in the same command, so no sync message is judged between
//! the switch and the collection. A producer's certificate of the term's key is written into its
//! first signer slot once the term's policy is in force and the old term's chunks are
//! collected: one task does all three, in that order, so a write never lands under the
//! previous term's policy or before the collection that would erase it. The chunk's
//! version is the time in milliseconds, so a certificate written again after a restart
//! supersedes the one before.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bitcoin::secp256k1::Keypair;
use tenure_chain::{
    produce::{
        BurnScan,
        producer_db::{self, producer_db_id},
        term_key::KeyCertificate,
    },
    terms::Terms,
};
use tenure_stackerdb::Chunk;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{logs, stackerdb::StackerDbHandle};

/// What drives a node's producer DB.
pub struct ProducerDbDriver {
    /// The network chunks are signed for.
    pub network: &'static str,
    /// The node's Stacker DBs.
    pub dbs: StackerDbHandle,
    /// The burnchain's terms.
    pub terms: Terms,
    /// This node's producer key, whose certificates it writes (none: it only
    /// replicates).
    pub keypair: Option<Keypair>,
}

impl ProducerDbDriver {
    /// Runs until the scans stop; `certificates` are this producer's certificates of
    /// its terms' keys, written at their term's start.
    pub async fn run(
        self,
        mut scans: watch::Receiver<Arc<BurnScan>>,
        mut certificates: mpsc::Receiver<KeyCertificate>,
    ) {
        let Ok(db) = producer_db_id() else { return };
        // The term whose policy is in force, and whether its plan was known.
        let mut applied: Option<(u64, bool)> = None;
        let mut collected_at: Option<u64> = None;
        let mut pending: BTreeMap<u64, KeyCertificate> = BTreeMap::new();
        loop {
            tokio::select! {
                changed = scans.changed() => if changed.is_err() { return },
                Some(certificate) = certificates.recv() => {
                    pending.insert(certificate.record.term, certificate);
                }
            }
            let scan = scans.borrow_and_update().clone();
            let (Some(height), Some(term)) = (scan.height(), scan.term()) else {
                continue;
            };
            let plan = scan.plan(term);
            // The term's policy when it changes, with the burn block that collects
            // the term before's chunks: one command, so no sync message is judged
            // between the switch and the collection.
            let switch = applied != Some((term, plan.is_some()));
            if switch || collected_at != Some(height) {
                let policies = if switch {
                    vec![(db.clone(), producer_db::policy(plan.as_ref(), &self.terms))]
                } else {
                    Vec::new()
                };
                // The DBs log what they collect.
                match self.dbs.burn_block_with(height, policies).await {
                    Ok(_) => {
                        if switch {
                            debug!(target: logs::STACKERDB, term, producers = plan.as_ref().map_or(0, |p| p.producers.len()), "producer DB policy switched");
                        }
                        applied = Some((term, plan.is_some()));
                        collected_at = Some(height);
                    }
                    Err(e) => {
                        warn!(target: logs::STACKERDB, term, height, %e, "producer DB not moved to the burn block")
                    }
                }
            }
            pending.retain(|t, _| *t >= term);
            if let (Some(certificate), Some(keypair), Some(plan)) =
                (pending.remove(&term), self.keypair, plan.as_ref())
            {
                let Some(slot) = producer_db::certificate_slot(plan, &keypair.public_key()) else {
                    continue;
                };
                let Ok(data) = certificate.to_bytes() else {
                    continue;
                };
                let version = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let chunk = Chunk::sign(
                    self.network,
                    &db,
                    slot,
                    version,
                    data,
                    &keypair.secret_key(),
                );
                match self.dbs.write(db.clone(), chunk).await {
                    Ok(_) => {
                        info!(target: logs::STACKERDB, term, slot, "term key certificate written to the producer DB")
                    }
                    Err(e) => {
                        warn!(target: logs::STACKERDB, term, slot, %e, "term key certificate not written")
                    }
                }
            }
        }
    }
}
