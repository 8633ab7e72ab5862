//! Membership: a join is admitted only with the federation's threshold signature on
//! the agreement, and leads to a new key; a leave gives a new key among the rest;
//! a key sequence gives fresh addresses that the federation can spend from.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use bitcoin::Network;
use common::{federation, member};
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    membership::{AdmitError, RosterChange, admit, admit_with},
    sign::verify_bip340,
};

fn dkg(roster: &Roster, seeds: &[u8], context: &[u8]) -> BTreeMap<MemberId, KeyShare> {
    common::dkg_among(roster, seeds, context)
}

#[test]
fn a_join_needs_the_threshold_signature_and_brings_a_new_key() {
    let keys = federation(4);
    let key = keys.values().next().unwrap().clone();
    let bigger = Roster::equal((1..=5).map(member).collect(), 100, 67).unwrap();
    let change = RosterChange::proposal(&key.roster, bigger.clone());
    assert_eq!(change.joining(&key.roster), vec![member(5)]);
    assert!(change.leaving(&key.roster).is_empty());

    // Without the federation's signature, nothing is admitted.
    let other = RosterChange::proposal(
        &key.roster,
        Roster::equal((1..=3).map(member).collect(), 100, 67).unwrap(),
    );
    let payload = serde_cbor::to_vec(&other).unwrap();
    let validator = || {
        |payload: &[u8]| -> Result<[u8; 32], String> {
            let change: RosterChange =
                serde_cbor::from_slice(payload).map_err(|e| e.to_string())?;
            Ok(change.agreement)
        }
    };
    let record_for_other = common::sign_now(&keys, validator, &payload);
    assert_eq!(
        admit(&key, &change, &record_for_other),
        Err(AdmitError::WrongMessage)
    );

    // The members' rule: admit one joiner at a time.
    let strict = || {
        let current = key.roster.clone();
        move |payload: &[u8]| -> Result<[u8; 32], String> {
            let change: RosterChange =
                serde_cbor::from_slice(payload).map_err(|e| e.to_string())?;
            if change.joining(&current).len() > 1 || !change.leaving(&current).is_empty() {
                return Err("one joiner at a time".into());
            }
            Ok(change.agreement)
        }
    };
    let record = common::sign_now(&keys, strict, &serde_cbor::to_vec(&change).unwrap());
    let admitted = admit(&key, &change, &record).unwrap();
    assert_eq!(admitted, bigger);

    // A record from another key does not admit.
    let strangers = federation(2);
    let stranger = strangers.values().next().unwrap();
    let foreign = common::sign_now(&strangers, validator, &serde_cbor::to_vec(&change).unwrap());
    assert!(matches!(
        admit(&key, &change, &foreign),
        Err(AdmitError::Unsigned(_))
    ));
    assert_ne!(stranger.public, key.public);

    // The new roster makes a new key, the joiner included.
    let next = dkg(&admitted, &[1, 2, 3, 4, 5], b"after join");
    assert_eq!(next.len(), 5);
    assert_ne!(next[&member(5)].public, key.public);
    assert_eq!(next[&member(5)].weight(), 20);
}

#[test]
fn after_a_leave_the_rest_make_a_new_key_and_sign() {
    let keys = federation(5);
    let key = keys.values().next().unwrap();
    let smaller = key.roster.without(&[member(5)]).unwrap();
    let next = dkg(&smaller, &[1, 2, 3, 4], b"after leave");
    let record = common::sign_now(
        &next,
        || {
            |p: &[u8]| -> Result<[u8; 32], String> {
                Ok(
                    sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), p))
                        .into(),
                )
            }
        },
        b"payout 1",
    );
    let new_key = next.values().next().unwrap();
    verify_bip340(&new_key.public, &record.message, &record.signature).unwrap();
}

#[test]
fn the_key_sequence_gives_fresh_addresses_the_federation_signs_for() {
    let keys = federation(4);
    let key = keys.values().next().unwrap();
    let addresses: Vec<String> = (0..3)
        .map(|i| {
            key.derive(i)
                .unwrap()
                .address(Network::Regtest)
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(addresses[0] != addresses[1] && addresses[1] != addresses[2]);
    // Every member derives the same key 2, and the derived shares sign for it.
    let derived: BTreeMap<MemberId, KeyShare> = keys
        .iter()
        .map(|(m, k)| (*m, k.derive(2).unwrap()))
        .collect();
    let public = &derived[&member(1)].public;
    assert!(derived.values().all(|k| &k.public == public));
    let record = common::sign_now(
        &derived,
        || |_: &[u8]| -> Result<[u8; 32], String> { Ok([5; 32]) },
        b"spend",
    );
    verify_bip340(public, &record.message, &record.signature).unwrap();
    assert!(verify_bip340(&key.public, &record.message, &record.signature).is_err());
    // Derived keys survive the stored form.
    let again = KeyShare::from_bytes(&derived[&member(2)].to_bytes().unwrap()).unwrap();
    assert_eq!(again, derived[&member(2)]);
}

#[test]
fn a_threshold_signature_on_anything_else_does_not_admit_a_roster_of_the_attackers_choosing() {
    let keys = federation(4);
    let key = keys.values().next().unwrap().clone();
    // The federation signs its ordinary business: a block digest.
    let anything = || |_: &[u8]| -> Result<[u8; 32], String> { Ok([0xb1; 32]) };
    let block_record = common::sign_now(&keys, anything, b"block 7");
    // An outsider pairs that signature with a roster that hands it every share.
    let takeover = Roster::equal(vec![member(9)], 100, 67).unwrap();
    let forged = RosterChange::with_agreement(&key.roster, takeover, block_record.message);
    assert_eq!(
        admit(&key, &forged, &block_record),
        Err(AdmitError::NotCommitted)
    );
    // An application's agreement is admitted only if its own check says it commits
    // to the roster.
    assert_eq!(
        admit_with(&key, &forged, &block_record, |_, to| to.len() == 5),
        Err(AdmitError::NotCommitted)
    );

    // The honest path still works: a proposal the members sign is admitted.
    let bigger = Roster::equal((1..=5).map(member).collect(), 100, 67).unwrap();
    let change = RosterChange::proposal(&key.roster, bigger.clone());
    let agree = || {
        |payload: &[u8]| -> Result<[u8; 32], String> {
            let change: RosterChange =
                serde_cbor::from_slice(payload).map_err(|e| e.to_string())?;
            Ok(change.agreement)
        }
    };
    let record = common::sign_now(&keys, agree, &serde_cbor::to_vec(&change).unwrap());
    assert_eq!(admit(&key, &change, &record), Ok(bigger.clone()));
    assert_eq!(
        admit_with(&key, &change, &record, |_, to| *to == bigger),
        Ok(bigger)
    );
}
