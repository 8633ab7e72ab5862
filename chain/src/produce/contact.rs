//! Producer contacts: how producers find each other's federation channels from public
//! data, with no list handed out of band.
//!
//! Seed 001 ("Producer Set Collaboration") has the producers talk over the p2p network
//! and leaves open how they find each other; the federation (seed 004) needs each
//! member's static Noise key and overlay identity before a DKG. Rules:
//!
//! - **What a contact says.** A producer's federation channel binding
//!   ([`ChannelKey`]: its enrollment key, as federation member, bound to a static
//!   Noise key and an overlay peer id, signed by that key) with a sequence number,
//!   signed again by the enrollment key over the network's name, the binding and the
//!   sequence ([`ProducerContact::sign`]). Another network's contact, or a binding
//!   moved under another sequence, does not verify.
//! - **Newest wins.** A node takes a producer's contact only when its sequence is
//!   higher than any it took from that producer ([`ContactBook::offer`]); a producer
//!   that restarts with a new Noise key or peer id signs a higher one, and a replayed
//!   older contact changes nothing (it would otherwise reset the member's channel).
//! - **Who may publish** ([`ContactGate`], the contacts topic's validator). A contact is
//!   forwarded only when the node's burnchain view holds a valid enrollment of its
//!   key mined in the current term or one of the two before it (enrollments mined in
//!   term N − 2 choose term N's producers: this covers the producers of the current
//!   term, the next one and the one after), both signatures verify, its sequence is
//!   newer than any forwarded from that producer, and at most
//!   [`CONTACTS_PER_TERM`] of the producer were forwarded in the term. A peer without
//!   an enrollment (which costs bitcoin) cannot get a contact past its first hop, and a
//!   producer can fill the topic with at most a few contacts a term. A bad signature
//!   blames the sender (a forwarder checked it, so the sender forged it); a key with no
//!   enrollment in the node's view is dropped without blame, since a node whose
//!   burnchain view lags (catching up after a restart) cannot tell a producer whose
//!   enrollment it has not scanned yet from a stranger. The check costs a lookup
//!   before any signature is verified.
//! - **When producers publish.** At start, at every term's first burn block (late
//!   joiners hear everyone within a term), and when they first learn of another
//!   producer (so a producer that joins late hears the others at once), at most once
//!   per few seconds (the node's choice).

use std::collections::BTreeMap;

use bitcoin::secp256k1::{Keypair, Message, SECP256K1, schnorr};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tenure_frost_fed::{MemberId, channel::ChannelKey};

use crate::codec::{self, CodecError, Versioned};

/// Wire version of [`ProducerContact`].
pub const CONTACT_VERSION: u16 = 1;

/// Largest contact decoded: a binding and two signatures are a few hundred bytes.
pub const MAX_CONTACT_BYTES: usize = 1024;

/// Contacts of one producer a node forwards in a term, at most: its start, the term's
/// start, and a few answers to producers it learnt of.
pub const CONTACTS_PER_TERM: u8 = 8;

/// A producer's channel binding as gossiped on the contacts topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerContact {
    /// Wire version ([`CONTACT_VERSION`]).
    pub version: u16,
    /// The binding; its member is the producer's enrollment key, x-only.
    pub channel: ChannelKey,
    /// Higher is newer (the node uses the time of signing, in milliseconds).
    pub sequence: u64,
    /// The member key's BIP340 signature on [`ProducerContact::digest`].
    pub signature: ByteBuf,
}

impl Versioned for ProducerContact {
    const VERSION: u16 = CONTACT_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

/// Why a contact is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// The contact's or the binding's signature does not verify under its member key.
    #[error("the contact of {0} is not signed by its key")]
    BadSignature(MemberId),
}

impl ProducerContact {
    /// `keypair`'s contact on `network`: `channel` (which `keypair` bound) under
    /// `sequence`.
    pub fn sign(
        network: &str,
        channel: ChannelKey,
        sequence: u64,
        keypair: &Keypair,
    ) -> ProducerContact {
        let digest = Self::digest(network, &channel, sequence);
        let signature = SECP256K1.sign_schnorr(&Message::from_digest(digest), keypair);
        ProducerContact {
            version: CONTACT_VERSION,
            channel,
            sequence,
            signature: ByteBuf::from(signature.as_ref().to_vec()),
        }
    }

    /// What the member key signs: the network, the binding's fields and the sequence.
    pub fn digest(network: &str, channel: &ChannelKey, sequence: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/producer-contact/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(channel.member.0);
        h.update(channel.noise_public);
        h.update((channel.overlay_peer.len() as u64).to_be_bytes());
        h.update(&channel.overlay_peer);
        h.update(sequence.to_be_bytes());
        h.finalize().into()
    }

    /// The producer (its enrollment key, x-only).
    pub fn member(&self) -> MemberId {
        self.channel.member
    }

    /// Whether both signatures verify under the member key on `network`.
    pub fn check_signature(&self, network: &str) -> Result<(), ContactError> {
        let member = self.member();
        let bad = || ContactError::BadSignature(member);
        let key = member.key().ok_or_else(bad)?;
        let signature = schnorr::Signature::from_slice(&self.signature).map_err(|_| bad())?;
        let digest = Self::digest(network, &self.channel, self.sequence);
        SECP256K1
            .verify_schnorr(&signature, &Message::from_digest(digest), &key)
            .map_err(|_| bad())?;
        if !self.channel.verify() {
            return Err(bad());
        }
        Ok(())
    }

    /// Encodes the contact.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a contact of at most [`MAX_CONTACT_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ProducerContact, CodecError> {
        codec::decode(bytes, MAX_CONTACT_BYTES)
    }
}

/// What the contacts topic's validator does with a contact ([`ContactGate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactVerdict {
    /// Deliver and forward it.
    Forward,
    /// Drop it without blame: no recent enrollment of its key in this node's view,
    /// not newer than one forwarded, or the producer was forwarded enough this term.
    Ignore,
    /// Drop it and blame its sender.
    Reject(ContactError),
}

/// The contacts topic's gate (module docs, "Who may publish").
#[derive(Debug)]
pub struct ContactGate {
    network: String,
    /// Per producer: the newest sequence forwarded, and how many were forwarded in
    /// `term`.
    forwarded: BTreeMap<MemberId, (u64, u8)>,
    term: u64,
}

impl ContactGate {
    /// A gate on `network`.
    pub fn new(network: &str) -> ContactGate {
        ContactGate {
            network: network.to_owned(),
            forwarded: BTreeMap::new(),
            term: 0,
        }
    }

    /// Judges `contact` in term `term`; `enrolled` says whether the node's burnchain
    /// view holds an enrollment of its key mined in `term` or one of the two before.
    pub fn judge(
        &mut self,
        contact: &ProducerContact,
        term: u64,
        enrolled: bool,
    ) -> ContactVerdict {
        if term != self.term {
            // A new term: the counts start again; producers no longer enrolled are
            // forgotten when they show up again (the map holds only enrolled keys).
            self.term = term;
            for (_, count) in self.forwarded.values_mut() {
                *count = 0;
            }
        }
        let member = contact.member();
        if !enrolled {
            self.forwarded.remove(&member);
            return ContactVerdict::Ignore;
        }
        if let Some((newest, count)) = self.forwarded.get(&member)
            && (contact.sequence <= *newest || *count >= CONTACTS_PER_TERM)
        {
            return ContactVerdict::Ignore;
        }
        if let Err(e) = contact.check_signature(&self.network) {
            return ContactVerdict::Reject(e);
        }
        let entry = self.forwarded.entry(member).or_insert((0, 0));
        *entry = (contact.sequence, entry.1.saturating_add(1));
        ContactVerdict::Forward
    }
}

/// The newest contact of every producer a node took ("Newest wins").
#[derive(Debug, Default)]
pub struct ContactBook {
    newest: BTreeMap<MemberId, ProducerContact>,
}

impl ContactBook {
    /// An empty book.
    pub fn new() -> ContactBook {
        ContactBook::default()
    }

    /// Takes `contact` if it is newer than the one held for its producer (or the first):
    /// whether it was taken. The caller checked its signatures (the gate did).
    pub fn offer(&mut self, contact: ProducerContact) -> bool {
        match self.newest.get(&contact.member()) {
            Some(held) if held.sequence >= contact.sequence => false,
            _ => {
                self.newest.insert(contact.member(), contact);
                true
            }
        }
    }

    /// The contact held for `member`.
    pub fn get(&self, member: &MemberId) -> Option<&ProducerContact> {
        self.newest.get(member)
    }

    /// Producers with a contact held.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether no contact is held.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::secp256k1::SecretKey;

    use super::*;

    const NET: &str = "testnet";

    fn keypair(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    fn contact(n: u8, sequence: u64, peer: u8) -> ProducerContact {
        let channel = ChannelKey::bind(&keypair(n), [n; 32], vec![peer; 38]);
        ProducerContact::sign(NET, channel, sequence, &keypair(n))
    }

    #[test]
    fn a_contact_verifies_only_as_signed_on_its_network() {
        let c = contact(1, 5, 9);
        assert_eq!(c.check_signature(NET), Ok(()));
        assert_eq!(
            ProducerContact::from_bytes(&c.to_bytes().unwrap()).unwrap(),
            c
        );
        assert!(c.check_signature("other").is_err());
        // The same binding under another sequence, or a binding moved to another peer.
        let mut resequenced = c.clone();
        resequenced.sequence = 6;
        assert!(resequenced.check_signature(NET).is_err());
        let mut moved = c.clone();
        moved.channel.overlay_peer = ByteBuf::from(vec![8; 38]);
        assert!(moved.check_signature(NET).is_err());
        // A stranger's key signing another member's binding.
        let mut stranger = c;
        let theirs = ProducerContact::sign(NET, stranger.channel.clone(), 5, &keypair(2));
        stranger.signature = theirs.signature;
        assert!(stranger.check_signature(NET).is_err());
        assert!(ProducerContact::from_bytes(&[0xff; 2000]).is_err());
    }

    #[test]
    fn the_gate_forwards_enrolled_producers_newer_contacts_a_few_times_a_term() {
        let mut gate = ContactGate::new(NET);
        // No enrollment here: dropped, nothing verified, nobody blamed (this node's
        // view may lag).
        assert_eq!(
            gate.judge(&contact(1, 1, 9), 3, false),
            ContactVerdict::Ignore
        );
        assert_eq!(
            gate.judge(&contact(1, 1, 9), 3, true),
            ContactVerdict::Forward
        );
        // A replay, or an older one: dropped without blame.
        assert_eq!(
            gate.judge(&contact(1, 1, 9), 3, true),
            ContactVerdict::Ignore
        );
        // A forged signature: blamed.
        let mut forged = contact(1, 2, 9);
        forged.signature = ByteBuf::from(vec![1; 64]);
        assert!(matches!(
            gate.judge(&forged, 3, true),
            ContactVerdict::Reject(ContactError::BadSignature(_))
        ));
        // Fresh ones: at most CONTACTS_PER_TERM a term, then again the next term.
        let forwarded = (2..40)
            .filter(|s| gate.judge(&contact(1, *s, 9), 3, true) == ContactVerdict::Forward)
            .count();
        assert_eq!(forwarded, usize::from(CONTACTS_PER_TERM) - 1);
        assert_eq!(
            gate.judge(&contact(1, 50, 9), 4, true),
            ContactVerdict::Forward
        );
    }

    #[test]
    fn the_book_keeps_the_newest_contact() {
        let mut book = ContactBook::new();
        assert!(book.offer(contact(1, 5, 9)));
        assert!(!book.offer(contact(1, 5, 9)));
        assert!(!book.offer(contact(1, 4, 7)));
        assert!(book.offer(contact(1, 6, 7)));
        assert_eq!(
            book.get(&contact(1, 0, 0).member()).map(|c| c.sequence),
            Some(6)
        );
        assert_eq!(book.len(), 1);
    }
}
