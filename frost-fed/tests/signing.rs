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
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use common::{federation, member};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tenure_frost_fed::{
    KeyShare, MemberId,
    member::SignFault,
    sign::{
        SignBody, SignMessage, SignOutput, Signing, SigningConfig, Validator, coordinator_count,
        message, verify_bip340,
    },
};
use tenure_tests::sim::{Faults, SimEvent, SimNet, Window};

/// Approves payloads that start with "ok"; signs their SHA-256.
struct OkPayloads;

impl Validator for OkPayloads {
    type Refusal = &'static str;
    fn approve(&self, payload: &[u8]) -> Result<[u8; 32], Self::Refusal> {
        if payload.starts_with(b"ok") {
            Ok(Sha256::digest(payload).into())
        } else {
            Err("payload refused")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Honest,
    /// Answers commitments, then never sends shares.
    CrashMidRound,
    /// Everything it sends arrives 3 s late.
    Slow,
    /// Sends garbage shares.
    InvalidShares,
    /// Leaves one of its shares out.
    Incomplete,
    /// Labels one of its shares with a number it does not hold.
    WrongNumber,
    /// Sends nothing at all.
    Dead,
}

/// How often every member's timers run.
const TICK: Duration = Duration::from_millis(10);

struct Sim {
    net: SimNet<MemberId, Vec<u8>>,
    members: BTreeMap<MemberId, Signing<OkPayloads>>,
    faults: BTreeMap<MemberId, Fault>,
    signed: BTreeMap<MemberId, tenure_frost_fed::sign::SignatureRecord>,
    cheaters: BTreeSet<MemberId>,
    failed: Vec<String>,
    keys: BTreeMap<MemberId, KeyShare>,
}

impl Sim {
    fn new(keys: &BTreeMap<MemberId, KeyShare>, seed: u64, loss: f64, duplicate: f64) -> Sim {
        let members = keys
            .iter()
            .map(|(m, k)| {
                (
                    *m,
                    Signing::new(Arc::new(k.clone()), OkPayloads, SigningConfig::default()),
                )
            })
            .collect();
        let faults = Faults {
            loss,
            duplicate,
            delay_ms: (1, 20),
            ..Faults::default()
        };
        Sim {
            net: SimNet::new(seed, TICK, faults),
            members,
            faults: keys.keys().map(|m| (*m, Fault::Honest)).collect(),
            signed: BTreeMap::new(),
            cheaters: BTreeSet::new(),
            failed: Vec::new(),
            keys: keys.clone(),
        }
    }

    /// Makes `member` misbehave so; a dead member is offline for the whole run.
    fn set_fault(&mut self, member: MemberId, fault: Fault) {
        self.faults.insert(member, fault);
        if fault == Fault::Dead {
            self.net.faults.offline.push((
                member,
                Window {
                    from: 0,
                    until: u64::MAX,
                },
            ));
        }
    }

    fn send(&mut self, from: MemberId, to: MemberId, msg: SignMessage) {
        let fault = self.faults[&from];
        // The cheats misbehave as a member set to misbehave live does.
        let cheat = match fault {
            Fault::InvalidShares => Some(SignFault::InvalidShare),
            Fault::Incomplete => Some(SignFault::Incomplete),
            Fault::WrongNumber => Some(SignFault::WrongNumber),
            _ => None,
        };
        let msg = match cheat {
            Some(cheat) => match cheat.apply(to, msg, self.net.now()).pop() {
                Some((_, _, msg)) => msg,
                None => return,
            },
            None => msg,
        };
        if fault == Fault::CrashMidRound && matches!(msg.body, SignBody::Shares { .. }) {
            return;
        }
        let extra_ms = if fault == Fault::Slow { 3_000 } else { 0 };
        self.net.send_with(
            from,
            to,
            message::encode(&msg).unwrap(),
            extra_ms,
            |_, _| {},
        );
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
                // Asker and coordinators get a verified record, every other member
                // the signature; the test verifies every record itself.
                SignOutput::Signed { record, .. } | SignOutput::Seen { record, .. } => {
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
        let now = self.net.now();
        let (_, out) = self
            .members
            .get_mut(&by)
            .unwrap()
            .request(payload, now, &mut OsRng);
        self.apply(by, out);
    }

    fn run_until(&mut self, until_ms: u64) {
        while let Some(event) = self.net.next_event(until_ms) {
            let now = self.net.now();
            match event {
                SimEvent::Deliver { from, to, msg } => {
                    let msg = message::decode(&msg).unwrap();
                    let out = self
                        .members
                        .get_mut(&to)
                        .unwrap()
                        .handle(from, msg, now, &mut OsRng);
                    self.apply(to, out);
                }
                SimEvent::Tick => {
                    let ids: Vec<MemberId> = self.members.keys().copied().collect();
                    for id in ids {
                        if self.net.is_offline(id) {
                            continue;
                        }
                        let out = self.members.get_mut(&id).unwrap().on_tick(now, &mut OsRng);
                        self.apply(id, out);
                    }
                }
            }
        }
    }

    /// Every live member reported a valid signature; returns the signers of one.
    fn check_signed(&self, payload: &[u8]) -> BTreeSet<MemberId> {
        self.check_signed_at(payload, |_| true)
    }

    /// Every member `wanted` names reported a valid signature, and some member did.
    /// (Here, below the channels, a lost message is lost: a member may miss the
    /// coordinator's announcement. The channels' reliable delivery carries it live.)
    fn check_signed_at(
        &self,
        payload: &[u8],
        wanted: impl Fn(&MemberId) -> bool,
    ) -> BTreeSet<MemberId> {
        assert!(
            !self.signed.is_empty(),
            "nobody has a signature; failures {:?}",
            self.failed
        );
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let any = self.keys.values().next().unwrap();
        let mut signers = BTreeSet::new();
        for (m, fault) in &self.faults {
            if *fault == Fault::Dead || !wanted(m) {
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
    let members: Vec<MemberId> = keys.keys().copied().collect();
    for seed in 1..=6u64 {
        let payload = format!("ok block {seed}").into_bytes();
        let leaders = ranking(any, &payload);
        // Three faulty members (30 of the 100 shares) anywhere in the ranking,
        // coordinators included, each with one of the faults in turn.
        let pick = |k: u64| members[((seed * 7 + k * 3) % 10) as usize];
        let kinds = [
            Fault::CrashMidRound,
            Fault::InvalidShares,
            Fault::Incomplete,
            Fault::WrongNumber,
            Fault::Slow,
        ];
        let faulty: Vec<(MemberId, Fault)> = (0..3u64)
            .map(|k| (pick(k), kinds[((seed + k) % 5) as usize]))
            .collect();
        let cheat_ids: BTreeSet<MemberId> = faulty
            .iter()
            .filter(|(_, f)| {
                matches!(
                    f,
                    Fault::InvalidShares | Fault::Incomplete | Fault::WrongNumber
                )
            })
            .map(|(m, _)| *m)
            .collect();
        let mut sim = Sim::new(&keys, seed, 0.02, 0.05);
        for (member, fault) in &faulty {
            sim.set_fault(*member, *fault);
        }
        let asker = leaders[seed as usize % 10];
        sim.request(asker, &payload);
        sim.run_until(15_000);
        let signers = sim.check_signed_at(&payload, |m| sim.signed.contains_key(m));
        // A faulty coordinator handles its own shares without sending them (they
        // are sound); a faulty member that only answers never contributes.
        let coordinators: BTreeSet<MemberId> = tenure_frost_fed::sign::coordinators(
            any,
            tenure_frost_fed::sign::request_id(any, &payload),
            asker,
            SigningConfig::default().coordinators,
        )
        .into_iter()
        .collect();
        assert_eq!(
            coordinators.len(),
            coordinator_count(&any.roster, SigningConfig::default().coordinators)
        );
        for (member, fault) in &faulty {
            if coordinators.contains(member) || *fault == Fault::Slow {
                continue;
            }
            assert!(
                !signers.contains(member),
                "seed {seed}: the shares of {member} ({fault:?}) were used"
            );
        }
        // Only cheats are ever named; whether each was named depends on whether it
        // landed in a session.
        assert!(
            sim.cheaters.is_subset(&cheat_ids),
            "seed {seed}: an honest member was blamed: {:?}",
            sim.cheaters
        );
    }
}

#[test]
fn a_member_leaving_out_a_share_or_mislabelling_one_is_named_and_signing_goes_on() {
    // Four members of 25 shares: any session needs three. With one dead, every
    // session holds the cheat; its incomplete or mislabelled answer failed
    // aggregation with no culprit named, and it was chosen again and again.
    for fault in [Fault::Incomplete, Fault::WrongNumber] {
        let keys = federation(4);
        let any = keys.values().next().unwrap();
        let payload = b"ok block 5";
        let order = ranking(any, payload);
        let (dead, cheat) = (order[2], order[3]);
        let mut sim = Sim::new(&keys, 12, 0.0, 0.0);
        sim.set_fault(dead, Fault::Dead);
        sim.set_fault(cheat, fault);
        sim.request(order[0], payload);
        sim.run_until(3_000);
        assert_eq!(sim.cheaters, BTreeSet::from([cheat]));
        assert!(sim.signed.is_empty(), "the cheat's shares are needed");
        // Once the dead member is back, the three honest members sign without it.
        let mut sim = Sim::new(&keys, 13, 0.0, 0.0);
        sim.set_fault(cheat, fault);
        sim.request(order[0], payload);
        sim.run_until(5_000);
        let signers = sim.check_signed(payload);
        assert!(!signers.contains(&cheat));
        assert!(sim.cheaters.is_subset(&BTreeSet::from([cheat])));
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
    sim.set_fault(dead, Fault::Dead);
    sim.set_fault(cheat, Fault::InvalidShares);
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
    sim.set_fault(first, Fault::Dead);
    sim.request(requester, payload);
    sim.run_until(5_000);
    sim.check_signed(payload);
}

#[test]
fn an_asker_that_crashes_once_it_asked_is_replaced_as_coordinator() {
    let keys = federation(10);
    let payload = b"ok block 10";
    let mut sim = Sim::new(&keys, 8, 0.0, 0.0);
    sim.request(member(3), payload);
    // Its request is out; it answers nothing from now on.
    sim.set_fault(member(3), Fault::Dead);
    sim.run_until(5_000);
    sim.check_signed(payload);
}

/// Members commit to the asker as soon as they approve its request, and to a later
/// coordinator whose `Start` came before the request; before, that `Start` was
/// dropped and the coordinator never heard from the member.
#[test]
fn members_commit_to_the_asker_at_once_and_to_a_coordinator_that_started_before_the_request() {
    let keys = federation(4);
    let asker = member(1);
    let any = &keys[&asker];
    let payload = b"ok block 11".to_vec();
    let id = tenure_frost_fed::sign::request_id(any, &payload);
    let order =
        tenure_frost_fed::sign::coordinators(any, id, asker, SigningConfig::default().coordinators);
    assert_eq!(order[0], asker);
    let later = order[1];
    let receiver = *keys.keys().find(|m| **m != asker && **m != later).unwrap();
    let mut signing = Signing::new(
        Arc::new(keys[&receiver].clone()),
        OkPayloads,
        SigningConfig::default(),
    );
    let now = std::time::Instant::now();
    let message = |coordinator, body| SignMessage {
        version: tenure_frost_fed::sign::message::SIGN_VERSION,
        request: id,
        coordinator,
        body,
    };
    let early = signing.handle(later, message(later, SignBody::Start), now, &mut OsRng);
    assert!(early.is_empty(), "nothing to commit before the request");
    let out = signing.handle(
        asker,
        message(
            asker,
            SignBody::Request {
                payload: serde_bytes::ByteBuf::from(payload.clone()),
            },
        ),
        now,
        &mut OsRng,
    );
    let committed: BTreeSet<MemberId> = commits_to(&out).into_iter().collect();
    assert_eq!(committed, BTreeSet::from([asker, later]));
}

/// The members `out` sends nonce commitments to.
fn commits_to(out: &[SignOutput]) -> Vec<MemberId> {
    out.iter()
        .filter_map(|o| match o {
            SignOutput::Send {
                to,
                msg:
                    SignMessage {
                        body: SignBody::Commit { .. },
                        ..
                    },
            } => Some(*to),
            _ => None,
        })
        .collect()
}

/// A member's validator may approve a moment after the request arrives (its
/// producer pre-commits to the proposal the request names later): the member then
/// commits to the asker. One that never approves reports its refusal once the wait
/// is over.
#[test]
fn a_member_that_approves_after_the_request_arrived_still_commits_and_one_that_never_does_refuses()
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let keys = federation(4);
    let asker = member(1);
    let receiver = member(2);
    let gate = Arc::new(AtomicBool::new(false));
    let open = gate.clone();
    let validator = move |payload: &[u8]| -> Result<[u8; 32], String> {
        if open.load(Ordering::SeqCst) {
            Ok(Sha256::digest(payload).into())
        } else {
            Err("not pre-committed yet".into())
        }
    };
    let config = SigningConfig::default();
    let wait = config.approval_wait;
    let request = |payload: &[u8]| SignMessage {
        version: tenure_frost_fed::sign::message::SIGN_VERSION,
        request: tenure_frost_fed::sign::request_id(&keys[&asker], payload),
        coordinator: asker,
        body: SignBody::Request {
            payload: serde_bytes::ByteBuf::from(payload.to_vec()),
        },
    };
    let refused = |out: &[SignOutput]| out.iter().any(|o| matches!(o, SignOutput::Refused { .. }));
    let mut signing = Signing::new(Arc::new(keys[&receiver].clone()), validator, config);
    let start = std::time::Instant::now();

    let out = signing.handle(asker, request(b"late"), start, &mut OsRng);
    assert!(commits_to(&out).is_empty() && !refused(&out));
    let out = signing.on_tick(start + Duration::from_millis(100), &mut OsRng);
    assert!(
        commits_to(&out).is_empty() && !refused(&out),
        "still waiting"
    );
    gate.store(true, Ordering::SeqCst);
    let out = signing.on_tick(start + Duration::from_millis(200), &mut OsRng);
    assert_eq!(commits_to(&out), vec![asker]);

    gate.store(false, Ordering::SeqCst);
    let out = signing.handle(asker, request(b"never"), start, &mut OsRng);
    assert!(commits_to(&out).is_empty());
    let out = signing.on_tick(start + wait / 2, &mut OsRng);
    assert!(!refused(&out));
    let out = signing.on_tick(start + wait, &mut OsRng);
    assert!(refused(&out) && commits_to(&out).is_empty());
    let out = signing.on_tick(start + wait * 2, &mut OsRng);
    assert!(!refused(&out), "the refusal is reported once");
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

/// Members holding the threshold know the group secret between them, so they can split
/// a valid signature into shares "from" anyone. A record whose shares still sum to the
/// signature but do not each verify is refused: a signer set cannot be forged.
#[test]
fn a_record_whose_shares_are_shifted_between_members_is_refused() {
    use k256::{
        Scalar,
        elliptic_curve::{PrimeField, ff::Field},
    };
    let keys = federation(10);
    let any = keys.values().next().unwrap();
    let record = common::sign_now(&keys, || OkPayloads, b"ok block");
    let signers = record.verify(&any.public, &any.roster).unwrap();
    assert!(signers.weight >= 67);

    let scalar = |bytes: &[u8]| {
        Option::<Scalar>::from(Scalar::from_repr(*k256::FieldBytes::from_slice(bytes))).unwrap()
    };
    let delta = Scalar::random(&mut OsRng);
    let mut forged = record.clone();
    let (a, b) = (forged.shares[0].1.clone(), forged.shares[1].1.clone());
    forged.shares[0].1 = serde_bytes::ByteBuf::from((scalar(&a) + delta).to_repr().to_vec());
    forged.shares[1].1 = serde_bytes::ByteBuf::from((scalar(&b) - delta).to_repr().to_vec());
    // The sum, and so the signature, is unchanged...
    assert_eq!(forged.signature, record.signature);
    // ...yet the record is refused.
    assert!(matches!(
        forged.verify(&any.public, &any.roster),
        Err(tenure_frost_fed::sign::RecordError::Aggregate(_))
    ));
    assert!(record.verify(&any.public, &any.roster).is_ok());
}

#[test]
fn a_member_asking_for_what_the_group_already_signed_gets_the_signature_at_once() {
    // A new leader re-asks for a payload its predecessor had signed: the others
    // treat the request as done and would never answer it again.
    let keys = federation(10);
    let mut sim = Sim::new(&keys, 3, 0.0, 0.0);
    sim.request(member(1), b"ok block 7");
    sim.run_until(2_000);
    sim.check_signed(b"ok block 7");
    let first = sim.signed[&member(1)].clone();
    sim.signed.clear();
    sim.request(member(4), b"ok block 7");
    let record = sim
        .signed
        .get(&member(4))
        .expect("the signature, without another round");
    assert_eq!(record, &first);
    let any = keys.values().next().unwrap();
    assert!(record.verify(&any.public, &any.roster).is_ok());
}
