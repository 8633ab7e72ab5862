//! A term of block production in the shared seeded simulation, with every real part:
//! six producers of unequal spend make their term key with the weighted DKG, elect
//! a leader, and produce blocks of transfers from a load generator; each block is
//! checked by every producer before it pre-commits, signed by the federation's robust
//! FROST signing (each member's validator approving only what its producer
//! pre-committed), and validated with its signer evidence by every producer.
//!
//! Faults: lost, duplicated, delayed and reordered messages; the leader crashes
//! mid-term and comes back later; one producer is byzantine: when it leads, every
//! block it proposes has a wrong state root.
//!
//! For every seed: blocks are produced before and after the crash, transfers are
//! included, nothing the byzantine producer proposed is ever signed, and every
//! producer holds the same tip. Then the next term starts, with other weights and a
//! new key from another DKG, each producer switching a little after the one before:
//! the new term produces blocks and every producer ends on one tip again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use tenure_chain::produce::ProducerConfig;
use tenure_tests::{
    producer_sim::{ProducerSet, ProducerSim, ProducerSimConfig, term},
    sim::{Faults, Window},
};

const TERM: u64 = 5;
/// The producers' shares of the 100, following their BTC spend. A crash of the
/// heaviest still leaves 78 shares, so the threshold of 67 has some slack.
const SPENDS: [u16; 6] = [22, 20, 18, 16, 14, 10];
const BYZANTINE: usize = 5;
const CRASH_AT_MS: u64 = 5_000;
const BACK_AT_MS: u64 = 10_000;
const END_MS: u64 = 14_000;

fn config(seed: u64) -> ProducerSimConfig {
    ProducerSimConfig {
        seed,
        faults: Faults {
            loss: 0.02,
            duplicate: 0.02,
            delay_ms: (5, 40),
            ..Faults::default()
        },
        reliable_federation: true,
        producer: ProducerConfig {
            block_interval: Duration::from_millis(400),
            leader_timeout: Duration::from_millis(1_500),
            ..ProducerConfig::default()
        },
        byzantine: Some(BYZANTINE),
        load_per_s: 20,
    }
}

#[test]
fn a_producer_set_produces_signed_blocks_through_a_crashed_leader_a_byzantine_one_and_a_term_change()
 {
    let set = ProducerSet::new(SPENDS.len()).unwrap();
    let first = term(&set, TERM, &SPENDS).unwrap();
    // The next term's producers spend in reverse: other weights, another key.
    let mut next_spends = SPENDS;
    next_spends.reverse();
    let next = term(&set, TERM + 1, &next_spends).unwrap();

    for seed in 1..=2u64 {
        let mut sim = ProducerSim::new(&config(seed), &set, &first);
        sim.run_until(CRASH_AT_MS);
        let before = sim.height(0);
        assert!(
            before >= 3,
            "seed {seed}: only {before} blocks before the crash"
        );

        // The leader now (an honest one if the byzantine leads: it is deposed soon).
        let leader = sim.leader().unwrap();
        sim.net.faults.offline.push((
            leader,
            Window {
                from: CRASH_AT_MS,
                until: BACK_AT_MS,
            },
        ));
        sim.run_until(BACK_AT_MS);
        let survivor = (leader + 1) % SPENDS.len();
        assert!(
            sim.height(survivor) > before,
            "seed {seed}: no block after leader {leader} crashed"
        );

        // The crashed producer is back; faults stop, so everyone converges.
        sim.run_until(END_MS - 2_000);
        sim.net.faults.loss = 0.0;
        sim.net.faults.duplicate = 0.0;
        sim.run_until(END_MS);
        // Production goes on, so a block may be on its way at any instant: every
        // producer must be on one tip at some moment within a second.
        let mut agreed = sim.agree();
        while !agreed && sim.net.now_ms() < END_MS + 1_000 {
            let step = sim.net.now_ms() + 10;
            sim.run_until(step);
            agreed = sim.agree();
        }
        assert!(
            agreed,
            "seed {seed}: producers end on different tips (heights {:?})",
            sim.heights()
        );
        assert!(
            sim.transfers_included > 0,
            "seed {seed}: no transfer included"
        );
        for (n, applied) in sim.applied.iter().enumerate() {
            for (_, hash) in applied {
                assert!(
                    !sim.byzantine_proposals.contains(hash),
                    "seed {seed}: producer {n} applied a byzantine proposal"
                );
            }
        }
        assert!(
            sim.byzantine_proposals.is_empty() || sim.byzantine_deposed,
            "seed {seed}: the byzantine leader was not deposed"
        );
        // The next term starts: each producer learns of it a little later than the
        // one before (the burn block travels), switches its member to the new key and
        // its producer to the new term, with the old term's last blocks in flight.
        let term_height = sim.height(0);
        let change_at = sim.net.now_ms();
        sim.net.faults.loss = 0.02;
        sim.net.faults.duplicate = 0.02;
        sim.change_term(&next, 40);
        sim.run_until(change_at + 5_000);
        sim.net.faults.loss = 0.0;
        sim.net.faults.duplicate = 0.0;
        sim.run_until(change_at + 6_000);
        let mut agreed = sim.agree();
        while !agreed && sim.net.now_ms() < change_at + 7_000 {
            let step = sim.net.now_ms() + 10;
            sim.run_until(step);
            agreed = sim.agree();
        }
        assert!(
            agreed,
            "seed {seed}: after the term change, producers end on different tips (heights {:?})",
            sim.heights()
        );
        for n in 0..SPENDS.len() {
            let state = sim.nodes[n].producer.state();
            assert_eq!(
                state.term,
                TERM + 1,
                "seed {seed}: producer {n} is not in the new term"
            );
            assert!(
                state.height > term_height + 1,
                "seed {seed}: producer {n} has no block of the new term"
            );
        }
        eprintln!(
            "seed {seed}: height {} ({} before the crash, {} at the term change), {} transfers, {} byzantine proposals",
            sim.height(0),
            before,
            term_height,
            sim.transfers_included,
            sim.byzantine_proposals.len()
        );
    }
}
