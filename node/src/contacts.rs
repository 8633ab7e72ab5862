//! How a producer node finds the other producers: it gossips its own contact on the
//! contacts topic and takes the others' ([`tenure_chain::produce::contact`] states the
//! rules), handing every newer binding to its federation member and its producer's
//! [`PeerDirectory`]. Nothing is handed out of band: what a node knows of the others
//! comes from their enrollments on the burnchain and their signed contacts.
//!
//! The node publishes its contact once its own enrollment is in its burnchain view
//! (before that every other node drops it), again at every term's first burn block,
//! and when it first takes another producer's contact (so a producer that starts late
//! hears the others at once), at most once per [`REPUBLISH_EVERY`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use bitcoin::secp256k1::Keypair;
use tenure_chain::produce::{
    BurnScan, ProducerId,
    contact::{ContactBook, ContactGate, ContactVerdict, ProducerContact},
};
use tenure_frost_fed::channel::ChannelKey;
use tenure_overlay::{
    GossipValidator, OverlayEvent, OverlayEvents, OverlayHandle, PeerId, Topic, Verdict,
};
use tokio::sync::watch;
use tracing::debug;

use crate::{federation::FedHandle, logs};

/// The least time between two contacts this node publishes on learning of others.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(3);

/// Which overlay peer is which producer, both ways: filled from contacts, read by the
/// producer's driver (whose messages count only from producers' peers, and which
/// sends direct messages to a producer's peer).
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory(Arc<RwLock<Directory>>);

#[derive(Debug, Default)]
struct Directory {
    producers: BTreeMap<PeerId, ProducerId>,
    peers: BTreeMap<ProducerId, PeerId>,
}

impl PeerDirectory {
    /// A directory holding `peers`.
    pub fn of(peers: BTreeMap<PeerId, ProducerId>) -> PeerDirectory {
        let directory = PeerDirectory::default();
        for (peer, producer) in peers {
            directory.insert(peer, producer);
        }
        directory
    }

    /// `producer` is at `peer` from now on (its previous peer, if any, no longer
    /// counts as it).
    pub fn insert(&self, peer: PeerId, producer: ProducerId) {
        let mut d = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = d.peers.insert(producer, peer) {
            d.producers.remove(&old);
        }
        d.producers.insert(peer, producer);
    }

    /// The producer at `peer`.
    pub fn producer_of(&self, peer: &PeerId) -> Option<ProducerId> {
        self.read().producers.get(peer).copied()
    }

    /// The peer of `producer`.
    pub fn peer_of(&self, producer: &ProducerId) -> Option<PeerId> {
        self.read().peers.get(producer).copied()
    }

    /// Whether `peer` is a producer's.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.read().producers.contains_key(peer)
    }

    /// A producer's peer other than `except`: the `n`-th, counting round (so a caller
    /// that counts up asks each in turn).
    pub fn any_peer(&self, n: usize, except: &PeerId) -> Option<PeerId> {
        let d = self.read();
        let others: Vec<PeerId> = d
            .producers
            .keys()
            .filter(|p| *p != except)
            .copied()
            .collect();
        others.get(n % others.len().max(1)).copied()
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.read().producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The contacts topic's validator on `network`: [`ContactGate`] with the enrollments
/// of the node's burnchain view (`scans`).
pub fn validate_contact(
    network: &'static str,
    scans: watch::Receiver<Arc<BurnScan>>,
) -> Arc<dyn GossipValidator> {
    let gate = Mutex::new(ContactGate::new(network));
    Arc::new(move |_: Option<PeerId>, data: &[u8]| {
        let contact = match ProducerContact::from_bytes(data) {
            Ok(contact) => contact,
            Err(e) => return Verdict::Reject(e.to_string()),
        };
        let scan = scans.borrow().clone();
        let Some(term) = scan.term() else {
            return Verdict::Ignore("no term here yet".into());
        };
        let enrolled = contact
            .member()
            .key()
            .is_some_and(|key| scan.recently_enrolled(term, &key));
        let verdict = gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .judge(&contact, term, enrolled);
        match verdict {
            ContactVerdict::Forward => Verdict::Accept,
            ContactVerdict::Ignore => {
                Verdict::Ignore("not enrolled here, not newer, or enough this term".into())
            }
            ContactVerdict::Reject(e) => Verdict::Reject(e.to_string()),
        }
    })
}

/// Whether `event` is one the contacts task takes.
pub fn wants(event: &OverlayEvent) -> bool {
    matches!(
        event,
        OverlayEvent::Gossip {
            topic: Topic::Contacts,
            ..
        }
    )
}

/// A producer node's contacts: who it is, and where what it learns goes.
pub struct Contacts {
    /// The network contacts are signed on.
    pub network: &'static str,
    /// The producer's enrollment key.
    pub keypair: Keypair,
    /// Its federation channel binding.
    pub channel: ChannelKey,
    /// Its federation member.
    pub federation: FedHandle,
    /// Its producer's directory.
    pub directory: PeerDirectory,
}

impl Contacts {
    /// Subscribes to the contacts topic on `overlay` and runs until `events` or
    /// `scans` stop; the returned watch counts the producers whose contact was taken.
    pub async fn spawn(
        self,
        overlay: &OverlayHandle,
        mut events: OverlayEvents,
        mut scans: watch::Receiver<Arc<BurnScan>>,
    ) -> anyhow::Result<watch::Receiver<usize>> {
        overlay
            .subscribe(
                Topic::Contacts,
                validate_contact(self.network, scans.clone()),
            )
            .await?;
        let overlay = overlay.clone();
        let (known_tx, known) = watch::channel(0usize);
        let me = self.keypair.x_only_public_key().0;
        self.directory
            .insert(overlay.peer_id(), ProducerId::of(&me));
        tokio::spawn(async move {
            let mut book = ContactBook::new();
            // The term of the last contact published, and when one was.
            let mut published_term: Option<u64> = None;
            let mut published_at: Option<Instant> = None;
            // Another producer learnt of since: publish again when allowed.
            let mut owed = false;
            let mut tick = tokio::time::interval(REPUBLISH_EVERY);
            loop {
                tokio::select! {
                    changed = scans.changed() => if changed.is_err() { return },
                    _ = tick.tick() => {}
                    event = events.next() => match event {
                        Some(OverlayEvent::Gossip { topic: Topic::Contacts, data, .. }) => {
                            // The validator checked it.
                            let Ok(contact) = ProducerContact::from_bytes(&data) else { continue };
                            let member = contact.member();
                            let first = book.get(&member).is_none();
                            if member.0 == me.serialize() || !book.offer(contact.clone()) {
                                continue;
                            }
                            let Ok(peer) = PeerId::from_bytes(&contact.channel.overlay_peer) else { continue };
                            let Some(key) = contact.member().key() else { continue };
                            self.directory.insert(peer, ProducerId::of(&key));
                            self.federation.add_contacts(vec![contact.channel]).await;
                            // A producer heard of for the first time may not have heard
                            // of this one: answer (another republishing is no news).
                            owed |= first;
                            known_tx.send_replace(book.len());
                            debug!(target: logs::PRODUCER, %peer, "took a producer's contact");
                        }
                        Some(_) => continue,
                        None => return,
                    },
                }
                let scan = scans.borrow_and_update().clone();
                let Some(term) = scan.term() else { continue };
                if !scan.recently_enrolled(term, &me) {
                    continue;
                }
                let due = published_term != Some(term)
                    || (owed && published_at.is_none_or(|at| at.elapsed() >= REPUBLISH_EVERY));
                if !due {
                    continue;
                }
                let contact = ProducerContact::sign(
                    self.network,
                    self.channel.clone(),
                    sequence_now(),
                    &self.keypair,
                );
                // Not published (no peer on the topic yet): tried again next tick.
                let published = match contact.to_bytes() {
                    Ok(bytes) => overlay
                        .publish(Topic::Contacts, bytes)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match published {
                    Ok(()) => {
                        published_term = Some(term);
                        published_at = Some(Instant::now());
                        owed = false;
                    }
                    Err(e) => debug!(target: logs::PRODUCER, %e, "contact not published"),
                }
            }
        });
        Ok(known)
    }
}

/// A contact's sequence: milliseconds since the Unix epoch (a restarted producer's
/// next contact is newer than its last).
fn sequence_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
