//! Echo broadcast with equivocation proofs, sans-IO (seed 004: the DKG's one-to-all
//! messages go by echo broadcast, so a member cannot show members different
//! commitments).
//!
//! A sender signs `(tag, digest of payload)` and sends the payload to every member.
//! Each member echoes the signed digest to every member. A member delivers the
//! payload once a quorum of members, ⌈(n + f + 1) / 2⌉ with f = ⌊(n − 1) / 3⌋, echoed
//! the digest of the payload it holds: two quorums share an honest member, so no two
//! honest members deliver different payloads for one `(sender, tag)`.
//!
//! A sender that signs two digests for one tag has equivocated, and the two signed
//! echoes prove it to anyone: the member that sees them reports the sender with the
//! evidence (the DKG then fails, blaming it). There is no totality: a member the
//! sender skipped does not deliver, and the caller's round timeout deals with that.
//!
//! Cost: a round in which every member broadcasts sends n³ echoes across the
//! federation, but each member checks a sender's signature once per distinct signed
//! digest (an echo identical to one already checked is not checked again), so the
//! signature checks are n² per round, not n³.

use crate::ids::BroadcastTag;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use bitcoin::secp256k1::Keypair;

use crate::{
    roster::MemberId,
    share::{member_sign, member_verify},
};

/// Broadcast messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BroadcastMessage {
    /// The sender's payload and its signature on `(tag, digest)`.
    Send {
        /// The broadcast's tag (unique per sender and purpose).
        tag: BroadcastTag,
        /// The payload.
        payload: ByteBuf,
        /// The sender's signature.
        signature: ByteBuf,
    },
    /// A member saw the sender sign this digest for the tag.
    Echo(SignedDigest),
}

/// A sender's signature on one digest for one tag: two for one tag with different
/// digests are an equivocation proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    /// The sender.
    pub sender: MemberId,
    /// The tag.
    pub tag: BroadcastTag,
    /// The payload's digest.
    pub digest: [u8; 32],
    /// The sender's signature.
    pub signature: ByteBuf,
}

impl SignedDigest {
    fn message(sender: &MemberId, tag: &BroadcastTag, digest: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/frost-fed/broadcast/v1");
        h.update(sender.0);
        h.update(tag);
        h.update(digest);
        h.finalize().into()
    }

    /// Whether the sender really signed it.
    pub fn verify(&self) -> bool {
        member_verify(
            &self.sender,
            Self::message(&self.sender, &self.tag, &self.digest),
            &self.signature,
        )
    }
}

/// What the broadcast asks its driver to do, or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BroadcastOutput {
    /// Send to one member.
    Send {
        /// The member.
        to: MemberId,
        /// The message.
        msg: BroadcastMessage,
    },
    /// A payload every honest member that delivers it delivers identically.
    Deliver {
        /// Its sender.
        sender: MemberId,
        /// Its tag.
        tag: BroadcastTag,
        /// The payload.
        payload: Vec<u8>,
    },
    /// The sender signed two digests for one tag.
    Equivocation {
        /// The sender.
        sender: MemberId,
        /// Its two signed digests.
        proof: Box<(SignedDigest, SignedDigest)>,
    },
}

#[derive(Default)]
struct Instance {
    payload: Option<(Vec<u8>, [u8; 32])>,
    echoed: bool,
    echoes: BTreeMap<MemberId, SignedDigest>,
    delivered: bool,
    equivocated: bool,
}

/// Most broadcast instances tracked per sender; beyond this the sender's oldest is
/// forgotten. Per sender, so one member broadcasting without end can only evict its
/// own instances, never another member's in flight.
pub const MAX_INSTANCES_PER_SENDER: usize = 256;

/// One member's side of every broadcast among `members`.
pub struct EchoBroadcast {
    me: MemberId,
    keypair: Keypair,
    members: Vec<MemberId>,
    /// The members whose echoes count towards delivery (the session's roster, see
    /// [`EchoBroadcast::count_only`]); all of `members` when unset.
    counted: Option<BTreeSet<MemberId>>,
    instances: BTreeMap<(MemberId, BroadcastTag), Instance>,
    /// Each sender's instances, oldest first.
    order: BTreeMap<MemberId, std::collections::VecDeque<BroadcastTag>>,
}

impl EchoBroadcast {
    /// Broadcast among `members` (this member included) as the holder of `keypair`.
    pub fn new(keypair: Keypair, members: Vec<MemberId>) -> EchoBroadcast {
        EchoBroadcast {
            me: MemberId::from(keypair.x_only_public_key().0),
            keypair,
            members,
            counted: None,
            instances: BTreeMap::new(),
            order: Default::default(),
        }
    }

    /// Adds a member (one whose channel binding arrived after this broadcast was
    /// made): its messages are taken, and it gets every later send and echo.
    pub fn add_member(&mut self, member: MemberId) {
        if !self.members.contains(&member) {
            self.members.push(member);
        }
    }

    /// Counts only `members`' echoes towards delivery, and sizes the quorum on them:
    /// the roster of the session under way. Messages are still taken from, and
    /// echoes still sent to, every member, so a member of the next session whose
    /// messages arrive early loses nothing; but a member outside the roster (an
    /// enrolled producer the term did not select) can neither help deliver nor, by
    /// its silence, hold a delivery up.
    pub fn count_only(&mut self, members: BTreeSet<MemberId>) {
        self.counted = Some(members);
    }

    /// Members that must echo one digest before it is delivered.
    pub fn quorum(&self) -> usize {
        let n = self
            .counted
            .as_ref()
            .map_or(self.members.len(), BTreeSet::len);
        let f = n.saturating_sub(1) / 3;
        (n + f + 1).div_ceil(2)
    }

    /// Broadcasts `payload` under `tag` (unique per sender and purpose).
    pub fn broadcast(&mut self, tag: BroadcastTag, payload: Vec<u8>) -> Vec<BroadcastOutput> {
        let digest: [u8; 32] = Sha256::digest(&payload).into();
        let signature = member_sign(
            &self.keypair,
            SignedDigest::message(&self.me, &tag, &digest),
        );
        let msg = BroadcastMessage::Send {
            tag,
            payload: ByteBuf::from(payload),
            signature: ByteBuf::from(signature.to_vec()),
        };
        let me = self.me;
        let mut out: Vec<BroadcastOutput> = self
            .members
            .iter()
            .filter(|m| **m != me)
            .map(|to| BroadcastOutput::Send {
                to: *to,
                msg: msg.clone(),
            })
            .collect();
        out.extend(self.handle(me, msg));
        out
    }

    fn instance(&mut self, key: (MemberId, BroadcastTag)) -> &mut Instance {
        if !self.instances.contains_key(&key) {
            let (sender, tag) = key;
            let order = self.order.entry(sender).or_default();
            order.push_back(tag);
            while order.len() > MAX_INSTANCES_PER_SENDER {
                if let Some(old) = order.pop_front() {
                    self.instances.remove(&(sender, old));
                }
            }
        }
        self.instances.entry(key).or_default()
    }

    /// A message from `from` (authenticated by the channel).
    pub fn handle(&mut self, from: MemberId, msg: BroadcastMessage) -> Vec<BroadcastOutput> {
        if !self.members.contains(&from) {
            return Vec::new();
        }
        match msg {
            BroadcastMessage::Send {
                tag,
                payload,
                signature,
            } => {
                let digest: [u8; 32] = Sha256::digest(&payload).into();
                let signed = SignedDigest {
                    sender: from,
                    tag,
                    digest,
                    signature,
                };
                if !signed.verify() {
                    return Vec::new();
                }
                let mut out = self.on_signed(from, signed.clone());
                let instance = self.instance((from, tag));
                if instance.payload.is_none() {
                    instance.payload = Some((payload.into_vec(), digest));
                }
                if !instance.echoed && !instance.equivocated {
                    instance.echoed = true;
                    let me = self.me;
                    out.extend(self.members.iter().filter(|m| **m != me).map(|to| {
                        BroadcastOutput::Send {
                            to: *to,
                            msg: BroadcastMessage::Echo(signed.clone()),
                        }
                    }));
                    self.on_echo(me, signed);
                }
                out.extend(self.try_deliver(from, tag));
                out
            }
            BroadcastMessage::Echo(signed) => {
                if !self.members.contains(&signed.sender) {
                    return Vec::new();
                }
                // Every honest echo of an instance carries the same signed digest: one
                // already verified here is not verified again, so a broadcast costs each
                // member one signature check per distinct digest, not one per echo
                // (n² checks a round across the federation instead of n³).
                let known = self
                    .instances
                    .get(&(signed.sender, signed.tag))
                    .is_some_and(|i| i.echoes.values().any(|e| *e == signed));
                if !known && !signed.verify() {
                    return Vec::new();
                }
                let (sender, tag) = (signed.sender, signed.tag);
                let mut out = self.on_signed(sender, signed.clone());
                self.on_echo(from, signed);
                out.extend(self.try_deliver(sender, tag));
                out
            }
        }
    }

    /// Any signed digest seen: one that differs from another for the same tag proves
    /// the sender equivocated.
    fn on_signed(&mut self, sender: MemberId, signed: SignedDigest) -> Vec<BroadcastOutput> {
        let instance = self.instance((sender, signed.tag));
        // This member's own echo is among the echoes, so a payload it received
        // directly is compared too.
        let conflicting = instance
            .echoes
            .values()
            .find(|e| e.digest != signed.digest)
            .cloned();
        match conflicting {
            Some(other) if !instance.equivocated => {
                instance.equivocated = true;
                vec![BroadcastOutput::Equivocation {
                    sender,
                    proof: Box::new((other, signed)),
                }]
            }
            _ => Vec::new(),
        }
    }

    fn on_echo(&mut self, from: MemberId, signed: SignedDigest) {
        let instance = self.instance((signed.sender, signed.tag));
        instance.echoes.entry(from).or_insert(signed);
    }

    fn try_deliver(&mut self, sender: MemberId, tag: BroadcastTag) -> Vec<BroadcastOutput> {
        let quorum = self.quorum();
        let Some(instance) = self.instances.get_mut(&(sender, tag)) else {
            return Vec::new();
        };
        if instance.delivered || instance.equivocated {
            return Vec::new();
        }
        let Some((payload, digest)) = &instance.payload else {
            return Vec::new();
        };
        let counted = &self.counted;
        let agreeing: BTreeSet<&MemberId> = instance
            .echoes
            .iter()
            .filter(|(m, e)| e.digest == *digest && counted.as_ref().is_none_or(|c| c.contains(m)))
            .map(|(m, _)| m)
            .collect();
        if agreeing.len() < quorum {
            return Vec::new();
        }
        instance.delivered = true;
        vec![BroadcastOutput::Deliver {
            sender,
            tag,
            payload: payload.clone(),
        }]
    }
}

/// Checks an equivocation proof: two valid signatures of one sender on different
/// digests for one tag.
pub fn check_equivocation(proof: &(SignedDigest, SignedDigest)) -> Option<MemberId> {
    let (a, b) = proof;
    (a.sender == b.sender && a.tag == b.tag && a.digest != b.digest && a.verify() && b.verify())
        .then_some(a.sender)
}
