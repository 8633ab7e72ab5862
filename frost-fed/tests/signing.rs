//! Signing among ten in-process members holding 100 shares (67 to sign), in a seeded
//! simulation with faults: a crashed member, a slow one, one sending invalid shares,
//! a crashed coordinator, dropped and duplicated messages. Every signature is checked
//! with secp256k1's BIP340 verifier and its signer set with the record.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Rng, federation, member};
use rand_core::{OsRng, RngCore};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use tenure_frost_fed::{
    KeyShare, MemberId,
    sign::{
        SignBody, SignMessage, SignOutput, Signing, SigningConfig, Validator, message,
        verify_bip340,
    },
};

/// Approves payloads that start with "ok"; signs their SHA-256.
struct OkPayloads;

impl Validator for OkPayloads {
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], String> {
        if payload.starts_with(b"ok") {
            Ok(Sha256::digest(payload).into())
        } else {
            Err("payload refused".into())
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Honest,
    /// Answers commitments, then never sends shares.
    CrashMidRound,
    /// Everything it sends arrives 3 s late.
    Slow,
    /// Sends garbage shares.
    InvalidShares,
    /// Sends nothing at all.
    Dead,
}

/// (deliver at ms, sequence, to, from, encoded message)
type InFlight = (u64, u64, MemberId, MemberId, Vec<u8>);

struct Sim {
    base: Instant,
    now_ms: u64,
    members: BTreeMap<MemberId, Signing<OkPayloads>>,
    faults: BTreeMap<MemberId, Fault>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: Rng,
    drop: f64,
    duplicate: f64,
    signed: BTreeMap<MemberId, tenure_frost_fed::sign::SignatureRecord>,
    cheaters: BTreeSet<MemberId>,
    failed: Vec<String>,
    keys: BTreeMap<MemberId, KeyShare>,
}

impl Sim {
    fn new(keys: &BTreeMap<MemberId, KeyShare>, seed: u64, drop: f64, duplicate: f64) -> Sim {
        let members = keys
            .iter()
            .map(|(m, k)| {
                (
                    *m,
                    Signing::new(Arc::new(k.clone()), OkPayloads, SigningConfig::default()),
                )
            })
            .collect();
        Sim {
            base: Instant::now(),
            now_ms: 0,
            members,
            faults: keys.keys().map(|m| (*m, Fault::Honest)).collect(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            drop,
            duplicate,
            signed: BTreeMap::new(),
            cheaters: BTreeSet::new(),
            failed: Vec::new(),
            keys: keys.clone(),
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn send(&mut self, from: MemberId, to: MemberId, mut msg: SignMessage) {
        let fault = self.faults[&from];
        match (fault, &mut msg.body) {
            (Fault::Dead, _) => return,
            (Fault::CrashMidRound, SignBody::Shares { .. }) => return,
            (Fault::InvalidShares, SignBody::Shares { shares, .. }) => {
                for (_, share) in shares.iter_mut() {
                    *share = ByteBuf::from(vec![0x11; 32]);
                }
            }
            _ => {}
        }
        if self.rng.chance(self.drop) {
            return;
        }
        let copies = if self.rng.chance(self.duplicate) {
            2
        } else {
            1
        };
        let bytes = message::encode(&msg);
        for _ in 0..copies {
            let mut delay = 1 + self.rng.next() % 20;
            if fault == Fault::Slow {
                delay += 3_000;
            }
            self.seq += 1;
            self.queue.push(Reverse((
                self.now_ms + delay,
                self.seq,
                to,
                from,
                bytes.clone(),
            )));
        }
    }

    fn apply(&mut self, from: MemberId, outputs: Vec<SignOutput>) {
        for output in outputs {
            match output {
                SignOutput::Broadcast(msg) => {
                    let all: Vec<MemberId> = self.members.keys().copied().collect();
                    for to in all.into_iter().filter(|to| *to != from) {
                        self.send(from, to, msg.clone());
                    }
                }
                SignOutput::Send { to, msg } => self.send(from, to, msg),
                SignOutput::Signed { record, .. } => {
                    assert!(
                        self.signed.insert(from, record).is_none(),
                        "{from} reported a signature twice"
                    );
                }
                SignOutput::Cheater { member, .. } => {
                    self.cheaters.insert(member);
                }
                SignOutput::Failed { reason, .. } => self.failed.push(reason),
                SignOutput::Refused { .. } => {}
            }
        }
    }

    fn request(&mut self, by: MemberId, payload: &[u8]) {
        let now = self.now();
        let (_, out) = self
            .members
            .get_mut(&by)
            .unwrap()
            .request(payload, now, &mut OsRng);
        self.apply(by, out);
    }

    fn run_until(&mut self, until_ms: u64) {
        while self.now_ms < until_ms {
            let next_tick = (self.now_ms / 10 + 1) * 10;
            while let Some(Reverse((at, ..))) = self.queue.peek() {
                if *at > next_tick {
                    break;
                }
                let Reverse((at, _, to, from, bytes)) = self.queue.pop().unwrap();
                self.now_ms = self.now_ms.max(at);
                if self.faults[&to] == Fault::Dead {
                    continue;
                }
                let msg = message::decode(&bytes).unwrap();
                let now = self.now();
                let out = self
                    .members
                    .get_mut(&to)
                    .unwrap()
                    .handle(from, msg, now, &mut OsRng);
                self.apply(to, out);
            }
            self.now_ms = next_tick;
            let now = self.now();
            let ids: Vec<MemberId> = self.members.keys().copied().collect();
            for id in ids {
                if self.faults[&id] == Fault::Dead {
                    continue;
                }
                let out = self.members.get_mut(&id).unwrap().on_tick(now, &mut OsRng);
                self.apply(id, out);
            }
        }
    }

    /// Every live member reported a valid signature; returns the signers of one.
    fn check_signed(&self, payload: &[u8]) -> BTreeSet<MemberId> {
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let any = self.keys.values().next().unwrap();
        let mut signers = BTreeSet::new();
        for (m, fault) in &self.faults {
            if *fault == Fault::Dead {
                continue;
            }
            let record = self
                .signed
                .get(m)
                .unwrap_or_else(|| panic!("{m} has no signature; failures {:?}", self.failed));
            assert_eq!(record.message, digest);
            verify_bip340(&any.public, &record.message, &record.signature).unwrap();
            let set = record.verify(&any.public, &any.roster).unwrap();
            assert!(set.weight >= 67);
            signers.extend(set.members);
        }
        signers
    }
}

#[test]
fn honest_members_sign_and_every_member_sees_the_signature() {
    let keys = federation(10);
    let mut sim = Sim::new(&keys, 1, 0.0, 0.0);
    sim.request(member(1), b"ok block 1");
    sim.run_until(2_000);
    sim.check_signed(b"ok block 1");
    assert!(sim.failed.is_empty());
}

#[test]
fn signing_goes_on_through_every_fault_for_several_seeds() {
    let keys = federation(10);
    let any = keys.values().next().unwrap();
    for seed in 1..=4u64 {
        let payload = format!("ok block {seed}").into_bytes();
        // The faulty members are not among the request's coordinators (a coordinator
        // handles its own shares without sending them).
        let leaders = ranking(any, &payload);
        let others: Vec<MemberId> = leaders.iter().skip(3).copied().collect();
        let (crashed, slow, cheat) = (others[0], others[1], others[2]);
        let mut sim = Sim::new(&keys, seed, 0.0, 0.05);
        sim.faults.insert(crashed, Fault::CrashMidRound);
        sim.faults.insert(slow, Fault::Slow);
        sim.faults.insert(cheat, Fault::InvalidShares);
        sim.request(leaders[4], &payload);
        sim.run_until(15_000);
        let signers = sim.check_signed(&payload);
        assert!(
            !signers.contains(&crashed),
            "seed {seed}: the crashed member signed?"
        );
        assert!(
            !signers.contains(&cheat),
            "seed {seed}: the cheat's shares were used"
        );
        // Whether the cheat landed in a session depends on who was ready first; if it
        // did, it is named, and no one else ever is.
        assert!(
            sim.cheaters.iter().all(|named| *named == cheat),
            "seed {seed}: an honest member was blamed: {:?}",
            sim.cheaters
        );
    }
}

/// Members in the order they coordinate `payload`'s request.
fn ranking(key: &KeyShare, payload: &[u8]) -> Vec<MemberId> {
    tenure_frost_fed::sign::ranking(key, tenure_frost_fed::sign::request_id(key, payload))
}

#[test]
fn a_member_sending_invalid_shares_is_named_when_its_shares_are_needed() {
    // Four members of 25 shares: any session needs three. With one dead, every
    // session holds the cheat, whose shares fail aggregation and name it.
    let keys = federation(4);
    let any = keys.values().next().unwrap();
    let payload = b"ok block 4";
    let order = ranking(any, payload);
    let (dead, cheat) = (order[2], order[3]);
    let mut sim = Sim::new(&keys, 11, 0.0, 0.0);
    sim.faults.insert(dead, Fault::Dead);
    sim.faults.insert(cheat, Fault::InvalidShares);
    sim.request(order[0], payload);
    sim.run_until(3_000);
    assert!(
        sim.signed.is_empty(),
        "a signature needs the cheat's or the dead member's shares"
    );
    assert_eq!(sim.cheaters, BTreeSet::from([cheat]));
}

#[test]
fn a_dead_first_coordinator_is_replaced() {
    let keys = federation(10);
    let any = keys.values().next().unwrap();
    let payload = b"ok block 9";
    let first = ranking(any, payload)[0];
    let requester = if first == member(1) {
        member(2)
    } else {
        member(1)
    };
    let mut sim = Sim::new(&keys, 7, 0.0, 0.0);
    sim.faults.insert(first, Fault::Dead);
    sim.request(requester, payload);
    sim.run_until(5_000);
    sim.check_signed(payload);
}

#[test]
fn a_payload_the_validators_refuse_is_not_signed() {
    let keys = federation(4);
    let mut sim = Sim::new(&keys, 3, 0.0, 0.0);
    sim.request(member(1), b"bad block");
    sim.run_until(31_000);
    assert!(sim.signed.is_empty());
    assert!(!sim.failed.is_empty(), "the requester is told it failed");
    let _ = OsRng.next_u32();
}
