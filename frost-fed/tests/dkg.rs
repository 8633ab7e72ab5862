//! The weighted DKG among in-process members, with faults: the keys it makes are real
//! FROST keys (a 67-share signature verifies with secp256k1's BIP340 verifier), and
//! each fault ends with the right member blamed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Message, SECP256K1, schnorr};
use frost_secp256k1_tr as frost;
use rand_core::OsRng;
use serde_bytes::ByteBuf;
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    dkg::{DealtShares, Delivery, Dkg, DkgBody, DkgFailure, DkgMessage, DkgOutput, session_id},
};

mod common;

use common::{keypair, member};

/// How a test tampers with messages: (from, to, message) → message to deliver, or none.
type Tamper = dyn FnMut(MemberId, MemberId, DkgMessage) -> Option<DkgMessage>;

struct Outcome {
    completed: BTreeMap<MemberId, KeyShare>,
    failed: BTreeMap<MemberId, DkgFailure>,
}

/// Runs one session among `members` (key seeds), delivering every message at once;
/// `silent` members never send. Then advances time past the round timeout.
fn run(
    members: &[u8],
    roster: &Roster,
    attempt: u32,
    silent: &[u8],
    tamper: &mut Tamper,
) -> Outcome {
    let session = session_id(b"test", roster, attempt);
    let now = Instant::now();
    let mut queue: VecDeque<(MemberId, MemberId, DkgMessage)> = VecDeque::new();
    let mut outcome = Outcome {
        completed: BTreeMap::new(),
        failed: BTreeMap::new(),
    };
    let ids: Vec<MemberId> = roster.members().iter().map(|(m, _)| *m).collect();
    let route = |from: MemberId,
                 outputs: Vec<DkgOutput>,
                 queue: &mut VecDeque<_>,
                 outcome: &mut Outcome| {
        for output in outputs {
            match output {
                DkgOutput::Broadcast(msg) => {
                    for to in ids.iter().filter(|to| **to != from) {
                        queue.push_back((from, *to, msg.clone()));
                    }
                }
                DkgOutput::Send { to, msg } => queue.push_back((from, to, msg)),
                DkgOutput::Completed(key) => {
                    outcome.completed.insert(from, *key);
                }
                DkgOutput::Failed(f) => {
                    outcome.failed.insert(from, f);
                }
            }
        }
    };
    let silent: Vec<MemberId> = silent.iter().map(|s| member(*s)).collect();
    let (mut states, first) = common::start_dkg(roster, members, session, now);
    for (id, out) in first {
        if !silent.contains(&id) {
            route(id, vec![out], &mut queue, &mut outcome);
        }
    }
    // Deliver everything, then let time pass in steps past the round timeout (5 s),
    // delivering what each step sends: the justification round needs a second step.
    for step in 0..=3u32 {
        if step > 0 {
            let later = now + Duration::from_secs(6) * step;
            for (id, state) in states.iter_mut() {
                if silent.contains(id) {
                    continue;
                }
                let out = state.on_tick(later);
                route(*id, out, &mut queue, &mut outcome);
            }
        }
        while let Some((from, to, msg)) = queue.pop_front() {
            let Some(msg) = tamper(from, to, msg) else {
                continue;
            };
            if silent.contains(&to) {
                continue;
            }
            let Some(state) = states.get_mut(&to) else {
                continue;
            };
            let out = state.handle(from, msg.clone(), Delivery::of(&msg), now);
            route(to, out, &mut queue, &mut outcome);
        }
    }
    outcome
}

fn no_tampering() -> Box<Tamper> {
    Box::new(|_, _, msg| Some(msg))
}

/// Signs `message` with the shares of the first members up to the threshold.
fn sign_with(keys: &BTreeMap<MemberId, KeyShare>, message: &[u8]) -> frost::Signature {
    let any = keys.values().next().unwrap();
    let threshold = usize::from(any.roster.threshold());
    let packages: Vec<&frost::keys::KeyPackage> = keys
        .values()
        .flat_map(|k| k.key_packages.values())
        .take(threshold)
        .collect();
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in &packages {
        let (n, c) = frost::round1::commit(kp.signing_share(), &mut OsRng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let shares: BTreeMap<_, _> = packages
        .iter()
        .map(|kp| {
            let share = frost::round2::sign(&package, &nonces[kp.identifier()], kp).unwrap();
            (*kp.identifier(), share)
        })
        .collect();
    frost::aggregate(&package, &shares, &any.public).unwrap()
}

#[test]
fn ten_members_make_one_certified_key_that_signs_bip340() {
    let seeds: Vec<u8> = (1..=10).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let outcome = run(&seeds, &roster, 0, &[], &mut *no_tampering());
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.completed.len(), 10);
    let keys = &outcome.completed;
    let first = keys.values().next().unwrap();
    for key in keys.values() {
        assert_eq!(key.public, first.public, "members disagree on the key");
        assert_eq!(key.weight(), 10);
        key.check_certificates().unwrap();
    }
    // The output key is the BIP341 tweak of the internal key, as bitcoin computes it.
    let internal = bitcoin::PublicKey::from_slice(&first.internal_key).unwrap();
    let (tweaked, _) = bitcoin::key::TapTweak::tap_tweak(
        bitcoin::XOnlyPublicKey::from(internal.inner),
        SECP256K1,
        None,
    );
    assert_eq!(tweaked.to_x_only_public_key(), first.output_key().unwrap());

    // BIP340 signs 32-byte messages: the federation signs digests.
    let msg32 = [7u8; 32];
    let sig = sign_with(keys, &msg32).serialize().unwrap();
    let sig = schnorr::Signature::from_slice(&sig).unwrap();
    let key = first.output_key().unwrap();
    SECP256K1
        .verify_schnorr(&sig, &Message::from_digest(msg32), &key)
        .unwrap();
    assert!(
        SECP256K1
            .verify_schnorr(&sig, &Message::from_digest([8u8; 32]), &key)
            .is_err()
    );
}

#[test]
fn key_shares_survive_their_stored_form() {
    let seeds: Vec<u8> = (1..=3).collect();
    let roster = Roster::new(
        vec![(member(1), 50), (member(2), 30), (member(3), 20)],
        100,
        67,
    )
    .unwrap();
    let outcome = run(&seeds, &roster, 0, &[], &mut *no_tampering());
    for key in outcome.completed.values() {
        let again = KeyShare::from_bytes(&key.to_bytes().unwrap()).unwrap();
        assert_eq!(&again, key);
    }
    assert_eq!(outcome.completed[&member(1)].weight(), 50);
    assert!(KeyShare::from_bytes(b"junk").is_err());
}

#[test]
fn a_dealer_of_bad_shares_is_blamed_by_everyone_through_the_complaint() {
    let seeds: Vec<u8> = (1..=5).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let cheat = member(3);
    let victim = member(5);
    let outcome = run(
        &seeds,
        &roster,
        0,
        &[],
        &mut move |from, to, mut msg: DkgMessage| {
            if from == cheat
                && to == victim
                && let DkgBody::Round2(dealt) = &mut msg.body
            {
                // Re-sign altered shares, as a dishonest dealer would.
                dealt.shares[0] = ByteBuf::from(vec![1u8; 32]);
                let digest = dealt.digest(&msg.session);
                let sig = SECP256K1.sign_schnorr(&Message::from_digest(digest), &keypair(3));
                dealt.signature = ByteBuf::from(sig.as_ref().to_vec());
            }
            Some(msg)
        },
    );
    assert!(outcome.completed.is_empty());
    let honest: Vec<MemberId> = seeds
        .iter()
        .map(|s| member(*s))
        .filter(|m| *m != cheat)
        .collect();
    for m in &honest {
        assert_eq!(
            outcome.failed[m].blamed,
            vec![cheat],
            "{m}: {:?}",
            outcome.failed[m]
        );
    }
    // The retry without the cheat succeeds.
    let retry = roster.without(&[cheat]).unwrap();
    let seeds: Vec<u8> = vec![1, 2, 4, 5];
    let outcome = run(&seeds, &retry, 1, &[], &mut *no_tampering());
    assert_eq!(outcome.completed.len(), 4);
}

/// The failure member 2 reaches when member 4 complains about the shares member 1
/// dealt it, after `alter` (which keeps member 1's signature as it was).
fn complaint_by_4_about_1(alter: impl Fn(&mut DealtShares)) -> DkgFailure {
    let seeds: Vec<u8> = (1..=4).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let liar = member(4);
    let session = session_id(b"test", &roster, 0);
    let now = Instant::now();
    let (mut states, mut outputs) = common::start_dkg(&roster, &seeds, session, now);
    // Deliver all round 1s, then the round 2 member 1 sent the liar.
    let mut to_liar = None;
    let mut round1_of_1 = None;
    while let Some((from, output)) = outputs.pop() {
        match output {
            DkgOutput::Send { to, msg } if matches!(msg.body, DkgBody::Round1(_)) => {
                if from == member(1)
                    && let DkgBody::Round1(package) = &msg.body
                {
                    round1_of_1 = Some(package.clone());
                }
                let out =
                    states
                        .get_mut(&to)
                        .unwrap()
                        .handle(from, msg.clone(), Delivery::of(&msg), now);
                outputs.extend(out.into_iter().map(|o| (to, o)));
            }
            DkgOutput::Send { to, msg } if from == member(1) && to == liar => to_liar = Some(msg),
            _ => {}
        }
    }
    let DkgBody::Round2(mut dealt) = to_liar.unwrap().body else {
        panic!()
    };
    alter(&mut dealt);
    let complaint = DkgMessage {
        version: 1,
        session,
        body: DkgBody::Complaint {
            shares: dealt,
            round1: round1_of_1.unwrap(),
        },
    };
    let out = states
        .get_mut(&member(2))
        .unwrap()
        .handle(liar, complaint, Delivery::Broadcast, now);
    out.into_iter()
        .find_map(|o| match o {
            DkgOutput::Failed(f) => Some(f),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_false_complaint_blames_the_complainer() {
    let failure = complaint_by_4_about_1(|_| {});
    assert_eq!(failure.blamed, vec![member(4)]);
    assert_eq!(
        failure.fault,
        tenure_frost_fed::dkg::DkgFault::FalseComplaint
    );
}

/// Found in review: the signed digest of dealt shares did not count them or their
/// lengths, so a recipient could split the same bytes into other "shares" (one of 16
/// bytes and one of 16) under the dealer's valid signature, complain that they are
/// not scalars, and have an honest dealer blamed. The split is now another message,
/// and the complainer is blamed.
#[test]
fn a_complaint_that_resplits_a_dealers_signed_shares_blames_the_complainer() {
    let failure = complaint_by_4_about_1(|dealt| {
        let first = dealt.shares.remove(0);
        dealt.shares.insert(0, ByteBuf::from(first[16..].to_vec()));
        dealt.shares.insert(0, ByteBuf::from(first[..16].to_vec()));
    });
    assert_eq!(failure.blamed, vec![member(4)], "{failure}");
    assert_eq!(
        failure.fault,
        tenure_frost_fed::dkg::DkgFault::ComplaintWithoutEvidence
    );
}

/// Found in review: a dealer that sends its round-1 package to the others only after
/// a member asked them for it. Each holder remembers what was asked and relays the
/// package when it comes, once.
#[test]
fn a_round_one_package_asked_for_before_it_came_is_relayed_when_it_comes() {
    let seeds: Vec<u8> = (1..=5).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let session = session_id(b"late-dealer", &roster, 0);
    let now = Instant::now();
    let (mut states, first) = common::start_dkg(&roster, &seeds, session, now);
    let package_of_3 = first
        .iter()
        .find_map(|(from, out)| match out {
            DkgOutput::Send { msg, .. } if *from == member(3) => Some(msg.clone()),
            _ => None,
        })
        .unwrap();
    let lacking = DkgMessage {
        version: 1,
        session,
        body: DkgBody::Lacking {
            dealers: vec![member(3)],
        },
    };
    let holder = states.get_mut(&member(5)).unwrap();
    // Member 1 asks before member 5 holds the package: nothing to send yet.
    assert!(
        holder
            .handle(member(1), lacking.clone(), Delivery::Direct, now)
            .is_empty()
    );
    // The package comes: it goes on to member 1.
    let out = holder.handle(member(3), package_of_3.clone(), Delivery::Direct, now);
    let relayed = |out: &[DkgOutput]| {
        out.iter()
            .filter(|o| {
                matches!(o, DkgOutput::Send { to, msg }
                    if *to == member(1) && matches!(msg.body, DkgBody::Round1(_)))
            })
            .count()
    };
    assert_eq!(relayed(&out), 1, "the package was not relayed when it came");
    // Asking again, or the package coming again, relays nothing more.
    let again = holder.handle(member(1), lacking, Delivery::Direct, now);
    assert_eq!(relayed(&again), 0);
    let copy = holder.handle(member(3), package_of_3, Delivery::Direct, now);
    assert_eq!(relayed(&copy), 0);
}

#[test]
fn a_silent_member_is_blamed_at_the_timeout_and_the_rest_make_a_key() {
    let seeds: Vec<u8> = (1..=6).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let outcome = run(&seeds, &roster, 0, &[6], &mut *no_tampering());
    assert!(outcome.completed.is_empty());
    for seed in 1..=5u8 {
        assert_eq!(outcome.failed[&member(seed)].blamed, vec![member(6)]);
    }
    let retry = roster.without(&[member(6)]).unwrap();
    let outcome = run(&[1, 2, 3, 4, 5], &retry, 1, &[], &mut *no_tampering());
    assert_eq!(outcome.completed.len(), 5);
    let weights: u16 = outcome.completed.values().map(KeyShare::weight).sum();
    assert_eq!(weights, 100);
}

#[test]
fn key_shares_are_reloaded_from_sled_after_a_restart() {
    use tenure_frost_fed::store::KeyStore;
    let seeds: Vec<u8> = (1..=3).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let outcome = run(&seeds, &roster, 0, &[], &mut *no_tampering());
    let key = &outcome.completed[&member(2)];
    let dir = tempfile::tempdir().unwrap();
    {
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.current().unwrap().is_none());
        store.put(key).unwrap();
    }
    let store = KeyStore::open(dir.path()).unwrap();
    assert_eq!(store.current().unwrap().as_ref(), Some(key));
    assert_eq!(store.get(&key.session).unwrap().as_ref(), Some(key));
    // Found again by the transcript a term key's record names; another is not held.
    assert_eq!(
        store.by_transcript(&key.transcript).unwrap().as_ref(),
        Some(key)
    );
    assert_eq!(store.by_transcript(&[7; 32]).unwrap(), None);
    assert_eq!(
        store.get(&tenure_frost_fed::SessionId([0; 32])).unwrap(),
        None
    );
}

/// A key share stored by `put` is on the disk: the writer process stores one and says
/// so, the power is cut at once and the writer killed with SIGKILL, and the store
/// opened on what the disk held gives the same key share back (a file system that
/// keeps only what `fsync` covered: sled's flush alone would have lost it).
#[test]
fn a_stored_key_share_survives_kill_9_and_a_power_cut() {
    use tenure_frost_fed::store::KeyStore;
    use tenure_tests::lossy_fs;
    if let Some(dir) = lossy_fs::writer_dir() {
        let seeds: Vec<u8> = (1..=3).collect();
        let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
        let outcome = run(&seeds, &roster, 0, &[], &mut *no_tampering());
        let key = &outcome.completed[&member(2)];
        let store = KeyStore::open(&dir.join("keys")).unwrap();
        // sled's background flusher syncs once as it starts, then every 500 ms: the
        // put comes between, so only the store's own sync can make it durable.
        std::thread::sleep(std::time::Duration::from_millis(100));
        store.put(key).unwrap();
        lossy_fs::acknowledge(&hex::encode(key.to_bytes().unwrap()));
        return;
    }
    let cut = lossy_fs::power_cut("a_stored_key_share_survives_kill_9_and_a_power_cut", 1)
        .expect("the lossy file system needs /dev/fuse and root");
    let store = KeyStore::open(&cut.restored.join("keys")).unwrap();
    let current = store
        .current()
        .unwrap()
        .expect("the stored key share was lost");
    assert_eq!(
        hex::encode(current.to_bytes().unwrap()),
        cut.acknowledged[0]
    );
}

/// How far a two-faced dealer carries its second face.
#[derive(Clone, Copy, Debug)]
enum TwoFaced {
    /// Only its round-1 package: the members shown it get shares that do not match,
    /// and complain.
    Round1Only,
    /// Its whole second session, shares included: every member's shares check, and
    /// the members disagree only on the transcript they certify.
    Throughout,
}

/// Issue 11 item 5, with round 1 point to point (issue 13): member 3 runs two
/// sessions at once under its one key, and members 1 and 2 see the second while 4
/// and 5 see the first. Whether the shares give it away (a complaint carrying the
/// package they were checked against) or only the certificates do (a dispute, in
/// which the two signed packages prove it), every honest member ends blaming member 3
/// alone, and the retry without it makes a key.
#[test]
fn a_dealer_showing_members_different_round_one_packages_is_proven_to_equivocate_and_blamed_by_everyone()
 {
    for two_faced in [TwoFaced::Round1Only, TwoFaced::Throughout] {
        let seeds: Vec<u8> = (1..=5).collect();
        let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
        let session = session_id(b"two-faced", &roster, 0);
        let now = Instant::now();
        let cheat = member(3);
        let shown_twin = [member(1), member(2)];
        let (mut states, first) = common::start_dkg(&roster, &seeds, session, now);
        let (mut twin, twin_first) = Dkg::start(
            session,
            roster.clone(),
            keypair(3),
            Duration::from_secs(5),
            now,
            &mut OsRng,
        )
        .unwrap();
        // (sender is the twin, from, to, message)
        let mut queue: VecDeque<(bool, MemberId, MemberId, DkgMessage)> = VecDeque::new();
        let mut failed: BTreeMap<MemberId, DkgFailure> = BTreeMap::new();
        let mut completed = 0;
        let route = |twin: bool,
                     from: MemberId,
                     outputs: Vec<DkgOutput>,
                     queue: &mut VecDeque<_>,
                     failed: &mut BTreeMap<MemberId, DkgFailure>,
                     completed: &mut usize| {
            for output in outputs {
                match output {
                    DkgOutput::Send { to, msg } => queue.push_back((twin, from, to, msg)),
                    DkgOutput::Broadcast(msg) => {
                        for to in roster.members().iter().map(|(m, _)| *m) {
                            if to != from {
                                queue.push_back((twin, from, to, msg.clone()));
                            }
                        }
                    }
                    DkgOutput::Completed(_) => *completed += 1,
                    DkgOutput::Failed(f) if !twin => {
                        failed.insert(from, f);
                    }
                    DkgOutput::Failed(_) => {}
                }
            }
        };
        for (from, out) in first {
            route(
                false,
                from,
                vec![out],
                &mut queue,
                &mut failed,
                &mut completed,
            );
        }
        route(
            true,
            cheat,
            twin_first,
            &mut queue,
            &mut failed,
            &mut completed,
        );
        for step in 0..=3u32 {
            let at = now + Duration::from_secs(6) * step;
            if step > 0 {
                for (id, state) in states.iter_mut() {
                    let out = state.on_tick(at);
                    route(false, *id, out, &mut queue, &mut failed, &mut completed);
                }
            }
            while let Some((from_twin, from, to, msg)) = queue.pop_front() {
                if from == cheat {
                    // Which face a member sees.
                    let shows_twin = match two_faced {
                        TwoFaced::Round1Only => matches!(msg.body, DkgBody::Round1(_)),
                        TwoFaced::Throughout => true,
                    } && shown_twin.contains(&to);
                    if from_twin != shows_twin {
                        continue;
                    }
                }
                if to == cheat {
                    // Both faces hear everything.
                    let out = twin.handle(from, msg.clone(), Delivery::of(&msg), at);
                    route(true, cheat, out, &mut queue, &mut failed, &mut completed);
                }
                let state = states.get_mut(&to).unwrap();
                let out = state.handle(from, msg.clone(), Delivery::of(&msg), at);
                route(false, to, out, &mut queue, &mut failed, &mut completed);
            }
        }
        assert_eq!(completed, 0, "{two_faced:?}: a key was made");
        for id in [1, 2, 4, 5].map(member) {
            let failure = failed
                .get(&id)
                .unwrap_or_else(|| panic!("{two_faced:?}: {id} did not fail"));
            assert_eq!(
                failure.blamed,
                vec![cheat],
                "{two_faced:?} at {id}: {failure}"
            );
            if matches!(two_faced, TwoFaced::Throughout) {
                assert_eq!(
                    failure.fault,
                    tenure_frost_fed::dkg::DkgFault::Equivocation,
                    "at {id}"
                );
            }
        }
        // The retry without the cheat makes a key.
        let retry = roster.without(&[cheat]).unwrap();
        let outcome = run(&[1, 2, 4, 5], &retry, 1, &[], &mut *no_tampering());
        assert_eq!(outcome.completed.len(), 4, "{two_faced:?}");
    }
}

/// A dealer that sends its round-1 package to some members only is not blamed by the
/// rest while the others go on: the package is signed, the members that lack it ask,
/// and any member relays it. The key is made by all. A package relayed with a forged
/// signature counts for nothing.
#[test]
fn a_round_one_package_withheld_from_some_members_is_relayed_and_the_key_is_made() {
    let seeds: Vec<u8> = (1..=5).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let mut tamper = |from: MemberId, to: MemberId, mut msg: DkgMessage| {
        if let DkgBody::Round1(package) = &mut msg.body
            && package.dealer == member(3)
        {
            if from == member(3) && [member(1), member(2)].contains(&to) {
                return None;
            }
            if from == member(5) && to == member(1) {
                // A relay that alters the package cannot pass it off as the dealer's.
                package.proof_z = ByteBuf::from(vec![1u8; 32]);
            }
        }
        Some(msg)
    };
    let outcome = run(&seeds, &roster, 0, &[], &mut tamper);
    assert!(
        outcome.failed.is_empty(),
        "{:?}",
        outcome
            .failed
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    assert_eq!(outcome.completed.len(), 5);
    let first = outcome.completed.values().next().unwrap();
    assert!(outcome.completed.values().all(|k| k.public == first.public));
}

/// Item 5 of the review: a dealer that sends one member round-2 shares under a bad
/// signature. The victim could prove nothing, dropped them, and blamed the dealer for
/// silence, while every other member blamed the victim for never certifying. Now the
/// victim says it lacks them, the dealer must open them to everyone, and a dealer that
/// does not is blamed by every member alike.
#[test]
fn shares_under_a_bad_signature_get_their_dealer_blamed_by_everyone_unless_it_opens_them() {
    let roster = Roster::equal((1..=4).map(member).collect(), 100, 67).unwrap();
    let bad_signature = |from: MemberId, to: MemberId, mut msg: DkgMessage| {
        if from == member(3)
            && to == member(1)
            && let DkgBody::Round2(dealt) = &mut msg.body
        {
            dealt.signature = ByteBuf::from(vec![7; 64]);
        }
        msg
    };
    // The dealer does not open what it is asked for.
    let outcome = run(
        &[1, 2, 3, 4],
        &roster,
        0,
        &[],
        &mut Box::new(move |from, to, msg: DkgMessage| {
            if from == member(3) && matches!(msg.body, DkgBody::Opened(_)) {
                return None;
            }
            Some(bad_signature(from, to, msg))
        }),
    );
    assert!(outcome.completed.is_empty());
    for id in [1, 2, 4].map(member) {
        let failure = &outcome.failed[&id];
        assert_eq!(failure.blamed, vec![member(3)], "at {id}: {failure}");
    }
    // The retry without the dealer makes a key.
    let without = roster.without(&[member(3)]).unwrap();
    let retry = run(&[1, 2, 4], &without, 1, &[], &mut no_tampering());
    assert_eq!(retry.completed.len(), 3);

    // A dealer that opens them (the bad signature was a fluke): the key is made.
    let opened = run(
        &[1, 2, 3, 4],
        &roster,
        2,
        &[],
        &mut Box::new(move |from, to, msg| Some(bad_signature(from, to, msg))),
    );
    assert!(
        opened.failed.is_empty(),
        "{:?}",
        opened.failed.values().next().map(ToString::to_string)
    );
    assert_eq!(opened.completed.len(), 4);
    let keys: Vec<_> = opened
        .completed
        .values()
        .map(|k| k.public.verifying_key())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
}

/// Issue 13: a round that is still receiving valid messages does not time out, however
/// long it takes in all; a member that stays silent is still blamed one timeout (5 s
/// here) after the last progress. Round-1 packages arrive one every 2 s, so round 1
/// takes 12 s: a clock-based timeout would blame honest, slow members.
#[test]
fn a_round_still_receiving_does_not_time_out_and_the_silent_are_still_blamed() {
    for silent_last in [false, true] {
        let seeds: Vec<u8> = (1..=6).collect();
        let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
        let session = session_id(b"slow", &roster, 0);
        let start = Instant::now();
        let ids: Vec<MemberId> = roster.members().iter().map(|(m, _)| *m).collect();
        let (mut states, first) = common::start_dkg(&roster, &seeds, session, start);
        let mut outcome = Outcome {
            completed: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        // Every member's round-1 packages, held back and released one dealer at a time.
        let mut held: Vec<(MemberId, Vec<(MemberId, DkgOutput)>)> = Vec::new();
        for (from, out) in first {
            if let DkgOutput::Send { msg, .. } = &out
                && matches!(msg.body, DkgBody::Round1(_))
            {
                match held.last_mut() {
                    Some((dealer, sends)) if *dealer == from => sends.push((from, out)),
                    _ => held.push((from, vec![(from, out)])),
                }
            }
        }
        if silent_last {
            held.pop();
        }
        let deliver = |states: &mut BTreeMap<MemberId, Dkg>,
                       outcome: &mut Outcome,
                       first: Vec<(MemberId, DkgOutput)>,
                       at: Instant| {
            let mut queue: VecDeque<(MemberId, MemberId, DkgMessage)> = VecDeque::new();
            let mut route = |from: MemberId, out: DkgOutput, queue: &mut VecDeque<_>| match out {
                DkgOutput::Broadcast(msg) => {
                    for to in ids.iter().filter(|to| **to != from) {
                        queue.push_back((from, *to, msg.clone()));
                    }
                }
                DkgOutput::Send { to, msg } => queue.push_back((from, to, msg)),
                DkgOutput::Completed(key) => {
                    outcome.completed.insert(from, *key);
                }
                DkgOutput::Failed(f) => {
                    outcome.failed.insert(from, f);
                }
            };
            for (from, out) in first {
                route(from, out, &mut queue);
            }
            while let Some((from, to, msg)) = queue.pop_front() {
                let Some(state) = states.get_mut(&to) else {
                    continue;
                };
                for out in state.handle(from, msg.clone(), Delivery::of(&msg), at) {
                    route(to, out, &mut queue);
                }
            }
        };
        let mut at = start;
        for (_, sends) in held {
            at += Duration::from_secs(2);
            let ticked: Vec<(MemberId, DkgOutput)> = states
                .iter_mut()
                .flat_map(|(id, state)| state.on_tick(at).into_iter().map(|out| (*id, out)))
                .collect();
            deliver(&mut states, &mut outcome, ticked, at);
            assert!(outcome.failed.is_empty(), "a slow round was timed out");
            deliver(&mut states, &mut outcome, sends, at);
        }
        if !silent_last {
            assert_eq!(outcome.completed.len(), 6, "the slow round completes");
            assert!(at.duration_since(start) >= Duration::from_secs(12));
            continue;
        }
        // Three seconds later the silent member is not blamed yet; a timeout after the
        // last progress it is, by every other member.
        for (step, blamed) in [(3u64, false), (6, true)] {
            let later = at + Duration::from_secs(step);
            // Member 6 itself heard everyone and moved on; the others wait for it.
            for (_, state) in states.iter_mut().filter(|(id, _)| **id != member(6)) {
                for out in state.on_tick(later) {
                    if let DkgOutput::Failed(f) = out {
                        assert!(blamed, "blamed before a timeout without progress");
                        assert_eq!(f.blamed, vec![member(6)]);
                        outcome.failed.insert(member(1), f);
                    }
                }
            }
        }
        assert!(
            !outcome.failed.is_empty(),
            "the silent member was never blamed"
        );
    }
}

/// Certificates travel point to point (issue 13: one n³-echo round fewer). A member
/// that certifies another transcript to one member is blamed by it with its own
/// signature as proof, the others complete; a certificate arriving by broadcast
/// counts for nothing.
#[test]
fn a_certificate_on_another_transcript_blames_its_signer_and_one_by_broadcast_counts_for_nothing() {
    let seeds: Vec<u8> = (1..=5).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let honest_certificate = std::rc::Rc::new(std::cell::RefCell::new(None));
    let kept = honest_certificate.clone();
    let mut tamper = move |from: MemberId, to: MemberId, mut msg: DkgMessage| {
        if let DkgBody::Certificate { .. } = &msg.body
            && from == member(3)
        {
            kept.borrow_mut().get_or_insert_with(|| msg.clone());
            if to == member(1) {
                let other = [9u8; 32];
                msg.body = DkgBody::Certificate {
                    transcript: other,
                    signature: ByteBuf::from(
                        tenure_frost_fed::share::member_sign(&keypair(3), other).to_vec(),
                    ),
                };
            }
        }
        Some(msg)
    };
    let outcome = run(&seeds, &roster, 0, &[], &mut tamper);
    let failure = &outcome.failed[&member(1)];
    assert_eq!(failure.blamed, vec![member(3)]);
    assert_eq!(
        failure.fault,
        tenure_frost_fed::dkg::DkgFault::AnotherTranscript
    );
    assert_eq!(outcome.completed.len(), 4, "the others make the key");

    // A certificate handed over as a broadcast is not read.
    let session = session_id(b"test", &roster, 1);
    let now = Instant::now();
    let (mut states, _) = common::start_dkg(&roster, &seeds, session, now);
    let mut certificate = honest_certificate.borrow().clone().unwrap();
    certificate.session = session;
    let state = states.get_mut(&member(1)).unwrap();
    assert!(
        state
            .handle(member(3), certificate, Delivery::Broadcast, now)
            .is_empty()
    );
    assert!(!state.is_over());
}

/// Found in review: a member resending its (valid) certificate must not keep the
/// certification phase alive while another member stays silent. The copy counts for
/// nothing; the silent member is blamed one timeout after the last real progress.
#[test]
fn a_certificate_sent_again_does_not_hold_off_the_timeout_for_a_silent_member() {
    let seeds: Vec<u8> = (1..=4).collect();
    let roster = Roster::equal(seeds.iter().map(|s| member(*s)).collect(), 100, 67).unwrap();
    let session = session_id(b"resend", &roster, 0);
    let now = Instant::now();
    let ids: Vec<MemberId> = roster.members().iter().map(|(m, _)| *m).collect();
    let (mut states, first) = common::start_dkg(&roster, &seeds, session, now);
    let mut queue: VecDeque<(MemberId, MemberId, DkgMessage)> = VecDeque::new();
    let mut certificate_of_2 = None;
    let push = |from: MemberId, out: DkgOutput, queue: &mut VecDeque<_>| match out {
        DkgOutput::Broadcast(msg) => {
            for to in ids.iter().filter(|to| **to != from) {
                queue.push_back((from, *to, msg.clone()));
            }
        }
        DkgOutput::Send { to, msg } => queue.push_back((from, to, msg)),
        DkgOutput::Completed(_) => {}
        DkgOutput::Failed(f) => panic!("failed too early: {f}"),
    };
    for (from, out) in first {
        push(from, out, &mut queue);
    }
    // Everything flows, except member 4's certificates, which never leave.
    while let Some((from, to, msg)) = queue.pop_front() {
        if let DkgBody::Certificate { .. } = msg.body {
            if from == member(4) {
                continue;
            }
            if from == member(2) && to == member(1) {
                certificate_of_2 = Some(msg.clone());
            }
        }
        let out = states
            .get_mut(&to)
            .unwrap()
            .handle(from, msg.clone(), Delivery::of(&msg), now);
        for o in out {
            push(to, o, &mut queue);
        }
    }
    let copy = certificate_of_2.unwrap();
    let member_1 = states.get_mut(&member(1)).unwrap();
    // Member 2 resends its certificate 4 s later (the timeout is 5 s and a bit)...
    let later = now + Duration::from_secs(4);
    assert!(member_1.on_tick(later).is_empty());
    assert!(
        member_1
            .handle(member(2), copy, Delivery::Direct, later)
            .is_empty()
    );
    // ...and at 8 s, a timeout after the last real progress, member 4 is blamed: the
    // copy did not count as progress.
    let out = member_1.on_tick(now + Duration::from_secs(8));
    let blamed = out.iter().find_map(|o| match o {
        DkgOutput::Failed(f) => Some(f.blamed.clone()),
        _ => None,
    });
    assert_eq!(blamed, Some(vec![member(4)]));
}
