//! Proof-of-mainstake: weights, a lottery every node reproduces, and sidechain headers
//! accepted from the winner only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use bitcoin::{
    OutPoint, Txid, XOnlyPublicKey,
    hashes::Hash,
    secp256k1::{Keypair, Message, SECP256K1, SecretKey},
};
use tenure_chain::mainstake::{HeaderError, Sidechain, SidechainHeader, Ticket, winner};

const SIDECHAIN: [u8; 32] = [0x5c; 32];

fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
}

fn owner(n: u8) -> XOnlyPublicKey {
    keypair(n).x_only_public_key().0
}

fn ticket(n: u8, value: u64, lock_height: u64) -> Ticket {
    Ticket {
        outpoint: OutPoint::new(Txid::from_byte_array([n; 32]), 0),
        value,
        lock_height,
        owner: owner(n),
    }
}

fn tip(i: u32) -> [u8; 32] {
    let mut t = [0u8; 32];
    t[..4].copy_from_slice(&i.to_be_bytes());
    bitcoin::hashes::sha256::Hash::hash(&t).to_byte_array()
}

#[test]
fn weight_is_value_times_blocks_left_and_reaches_zero_at_the_lock() {
    let t = ticket(1, 50_000, 1_000);
    assert_eq!(t.weight(900), 50_000 * 100);
    assert_eq!(t.weight(999), 50_000);
    assert_eq!(t.weight(1_000), 0);
    assert_eq!(t.weight(5_000), 0);
}

#[test]
fn every_node_draws_the_same_winner_and_odds_follow_weight() {
    // Weights at height 0: 1 : 3 (same value, three times the lock).
    let tickets = vec![ticket(1, 1_000, 100), ticket(2, 1_000, 300)];
    let mut shuffled = tickets.clone();
    shuffled.reverse();
    let mut wins: BTreeMap<XOnlyPublicKey, u32> = BTreeMap::new();
    for i in 0..4_000 {
        let a = winner(&tickets, &tip(i), 0, &SIDECHAIN).unwrap();
        let b = winner(&shuffled, &tip(i), 0, &SIDECHAIN).unwrap();
        assert_eq!(a, b, "the order tickets are listed in changed the winner");
        *wins.entry(a.owner).or_default() += 1;
    }
    let share = f64::from(wins[&owner(2)]) / 4_000.0;
    assert!(
        (0.72..0.78).contains(&share),
        "heavier ticket won {share} of draws, expected 0.75"
    );
    // A ticket past its lock never wins; with no weight there is no winner.
    assert_eq!(
        winner(&tickets, &tip(1), 150, &SIDECHAIN).unwrap().owner,
        owner(2)
    );
    assert!(winner(&tickets, &tip(1), 300, &SIDECHAIN).is_none());
}

fn sign(header: &SidechainHeader, by: u8, height: u64) -> Vec<u8> {
    let digest = header.signing_digest(&SIDECHAIN, height);
    SECP256K1
        .sign_schnorr(&Message::from_digest(digest), &keypair(by))
        .as_ref()
        .to_vec()
}

#[test]
fn headers_are_accepted_from_the_winner_and_refused_from_anyone_else() {
    let tickets = vec![
        ticket(1, 1_000, 10_000),
        ticket(2, 1_000, 10_000),
        ticket(3, 1_000, 10_000),
    ];
    let mut chain = Sidechain::new(SIDECHAIN);
    let (prev_tip, height) = (tip(77), 501);
    let won = winner(&tickets, &prev_tip, height - 1, &SIDECHAIN)
        .unwrap()
        .owner;
    let seed = (1..=3u8).find(|n| owner(*n) == won).unwrap();
    let loser = (1..=3u8).find(|n| owner(*n) != won).unwrap();

    let first = SidechainHeader {
        merkle_root: [1; 32],
        prev: [0; 32],
    };
    assert_eq!(
        chain.publish(
            &first,
            &owner(loser),
            &sign(&first, loser, height),
            &tickets,
            &prev_tip,
            height
        ),
        Err(HeaderError::NotWinner)
    );
    assert_eq!(
        chain.publish(
            &first,
            &won,
            &sign(&first, loser, height),
            &tickets,
            &prev_tip,
            height
        ),
        Err(HeaderError::Signature)
    );
    let orphan = SidechainHeader {
        merkle_root: [1; 32],
        prev: [9; 32],
    };
    assert_eq!(
        chain.publish(
            &orphan,
            &won,
            &sign(&orphan, seed, height),
            &tickets,
            &prev_tip,
            height
        ),
        Err(HeaderError::UnknownPrev)
    );
    chain
        .publish(
            &first,
            &won,
            &sign(&first, seed, height),
            &tickets,
            &prev_tip,
            height,
        )
        .unwrap();
    // One header per burn block.
    let again = SidechainHeader {
        merkle_root: [2; 32],
        prev: first.hash(),
    };
    assert_eq!(
        chain.publish(
            &again,
            &won,
            &sign(&again, seed, height),
            &tickets,
            &prev_tip,
            height
        ),
        Err(HeaderError::AlreadyPublished)
    );
    // The next block's winner may extend it.
    let (next_tip, next_height) = (tip(78), height + 1);
    let next_winner = winner(&tickets, &next_tip, height, &SIDECHAIN)
        .unwrap()
        .owner;
    let next_seed = (1..=3u8).find(|n| owner(*n) == next_winner).unwrap();
    chain
        .publish(
            &again,
            &next_winner,
            &sign(&again, next_seed, next_height),
            &tickets,
            &next_tip,
            next_height,
        )
        .unwrap();
    // With no stake left, no one may publish.
    let expired = vec![ticket(1, 1_000, 10)];
    let third = SidechainHeader {
        merkle_root: [3; 32],
        prev: again.hash(),
    };
    assert_eq!(
        chain.publish(
            &third,
            &owner(1),
            &sign(&third, 1, 600),
            &expired,
            &tip(79),
            600
        ),
        Err(HeaderError::NoWinner)
    );
}
