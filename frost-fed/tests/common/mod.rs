//! Keys for the tests: a real weighted DKG among in-process members.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use rand_core::OsRng;
use tenure_frost_fed::{
    KeyShare, MemberId, Roster, SessionId,
    dkg::{Delivery, Dkg, DkgOutput, session_id},
};

pub fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

pub fn member(n: u8) -> MemberId {
    MemberId::from(keypair(n).x_only_public_key().0)
}

/// Runs the DKG among members 1..=n with equal weights over 100 shares, threshold 67.
pub fn federation(n: u8) -> BTreeMap<MemberId, KeyShare> {
    let roster = Roster::equal((1..=n).map(member).collect(), 100, 67).unwrap();
    let seeds: Vec<u8> = (1..=n).collect();
    let keys = dkg_among(&roster, &seeds, b"test");
    assert_eq!(keys.len(), usize::from(n));
    keys
}

/// Runs a DKG for `roster` among the members with key seeds `seeds`, delivering every
/// message at once; panics if it fails.
pub fn dkg_among(roster: &Roster, seeds: &[u8], context: &[u8]) -> BTreeMap<MemberId, KeyShare> {
    let now = Instant::now();
    let (mut states, first) = start_dkg(roster, seeds, session_id(context, roster, 0), now);
    let mut queue: VecDeque<_> = first.into();
    let mut keys = BTreeMap::new();
    while let Some((from, output)) = queue.pop_front() {
        match output {
            DkgOutput::Broadcast(msg) => {
                for (to, state) in states.iter_mut().filter(|(to, _)| **to != from) {
                    let out = state.handle(from, msg.clone(), Delivery::of(&msg), now);
                    queue.extend(out.into_iter().map(|o| (*to, o)));
                }
            }
            DkgOutput::Send { to, msg } => {
                let out =
                    states
                        .get_mut(&to)
                        .unwrap()
                        .handle(from, msg.clone(), Delivery::of(&msg), now);
                queue.extend(out.into_iter().map(|o| (to, o)));
            }
            DkgOutput::Completed(key) => {
                keys.insert(from, *key);
            }
            DkgOutput::Failed(f) => panic!("DKG failed at {from}: {f:?}"),
        }
    }
    keys
}

/// Starts session `session` at every member with a key seed in `seeds` (round
/// timeout 5 s). Returns their states and the messages they sent first.
pub fn start_dkg(
    roster: &Roster,
    seeds: &[u8],
    session: SessionId,
    now: Instant,
) -> (BTreeMap<MemberId, Dkg>, Vec<(MemberId, DkgOutput)>) {
    let mut states = BTreeMap::new();
    let mut outputs = Vec::new();
    for seed in seeds {
        let (dkg, out) = Dkg::start(
            session,
            roster.clone(),
            keypair(*seed),
            Duration::from_secs(5),
            now,
            &mut OsRng,
        )
        .unwrap();
        states.insert(member(*seed), dkg);
        outputs.extend(out.into_iter().map(|o| (member(*seed), o)));
    }
    (states, outputs)
}

/// Signs `payload` among all members with no faults, delivering messages at once.
pub fn sign_now<V, F>(
    keys: &BTreeMap<MemberId, KeyShare>,
    validator: F,
    payload: &[u8],
) -> tenure_frost_fed::sign::SignatureRecord
where
    V: tenure_frost_fed::sign::Validator,
    F: Fn() -> V,
{
    use tenure_frost_fed::sign::{SignOutput, Signing, SigningConfig};
    let now = Instant::now();
    let mut members: BTreeMap<MemberId, Signing<V>> = keys
        .iter()
        .map(|(m, k)| {
            (
                *m,
                Signing::new(
                    std::sync::Arc::new(k.clone()),
                    validator(),
                    SigningConfig::default(),
                ),
            )
        })
        .collect();
    let requester = *keys.keys().next().unwrap();
    let (_, out) = members
        .get_mut(&requester)
        .unwrap()
        .request(payload, now, &mut OsRng);
    let mut queue: VecDeque<(MemberId, SignOutput)> =
        out.into_iter().map(|o| (requester, o)).collect();
    let mut result = None;
    let mut ticks = 0;
    loop {
        while let Some((from, output)) = queue.pop_front() {
            match output {
                SignOutput::Broadcast(msg) => {
                    for (to, m) in members.iter_mut().filter(|(to, _)| **to != from) {
                        let out = m.handle(from, msg.clone(), now, &mut OsRng);
                        queue.extend(out.into_iter().map(|o| (*to, o)));
                    }
                }
                SignOutput::Send { to, msg } => {
                    let out = members
                        .get_mut(&to)
                        .unwrap()
                        .handle(from, msg, now, &mut OsRng);
                    queue.extend(out.into_iter().map(|o| (to, o)));
                }
                SignOutput::Signed { record, .. } => result = Some(record),
                SignOutput::Seen { .. } => {}
                SignOutput::Refused { reason, .. } => panic!("{from} refused: {reason}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        if let Some(record) = result {
            return record;
        }
        ticks += 1;
        assert!(ticks < 100, "no signature");
        let later = now + Duration::from_millis(100 * ticks);
        for (id, m) in members.iter_mut() {
            let out = m.on_tick(later, &mut OsRng);
            queue.extend(out.into_iter().map(|o| (*id, o)));
        }
    }
}
