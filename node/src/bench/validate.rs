//! `tenure bench validate`: validation time of a block of 1,000 transfers.
//!
//! A term's first block funds 1,000 accounts; the measured block moves money from
//! each of them (1,000 BIP340 signatures, nonces, balances, the state root), signed by
//! 67 of a producer group's 100 FROST shares, so validation also checks each of the
//! 67 signature shares of the signer evidence.

use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::secp256k1::{Keypair, SECP256K1};
use serde::Serialize;
use tenure_chain::{
    block::{AccountId, ChainState, TermContext, Transfer, Tx, build},
    tenure_change::consensus_hash,
};

use super::{ms, percentile};

const NETWORK: &str = "bench-validate";

/// The validation benchmark's figures.
#[derive(Debug, Serialize)]
pub struct ValidateReport {
    /// Transfers in the block.
    pub transfers: usize,
    /// Validations timed.
    pub runs: usize,
    /// Median validation time.
    pub validate_ms: f64,
    /// Slowest of the runs.
    pub max_ms: f64,
}

/// Runs the validation benchmark.
pub fn validate(transfers: usize, runs: usize) -> anyhow::Result<ValidateReport> {
    anyhow::ensure!(
        transfers >= 1 && runs >= 1,
        "at least one transfer and one run"
    );
    let mut rng = bitcoin::secp256k1::rand::thread_rng();
    let group = build::ProducerGroup::generate(bitcoin::secp256k1::rand::random())
        .context("dealing the producer group")?;
    let accounts: Vec<Keypair> = (0..transfers)
        .map(|_| Keypair::new(SECP256K1, &mut rng))
        .collect();
    let payouts: Vec<(AccountId, u64)> = accounts
        .iter()
        .map(|k| (AccountId::of(&k.x_only_public_key().0), 1_000_000))
        .collect();
    let context = TermContext {
        term: 1,
        producer_key: group.key(),
        producer_shares: group.public.clone(),
        stacker_key: None,
        coinbase: payouts,
        cost_limit: 10 * 5_000,
        consensus_hash: consensus_hash(1, &[1; 32]),
        previous_consensus_hash: consensus_hash(0, &[0; 32]),
        producers: vec![(AccountId::of(&group.key()), 1)],
        share_owners: vec![0; 100],
    };
    let genesis = ChainState::default();
    let (first, _) = build::term_start(&genesis, &context, vec![], &group, None, NETWORK)
        .context("building the funding block")?;
    let funded = genesis
        .after(&first, &context, NETWORK)
        .map_err(|e| anyhow::anyhow!("funding block: {e}"))?;
    let txs: Vec<Tx> = accounts
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let to = accounts
                .get((i + 1) % accounts.len())
                .map_or(AccountId::default(), |k| {
                    AccountId::of(&k.x_only_public_key().0)
                });
            Tx::Transfer(Transfer::sign(NETWORK, from, to, 1_000, 10, 0))
        })
        .collect();
    let (block, _) = build::block(&funded, &context, 1, txs, &group, None)
        .context("building the measured block")?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let after = funded
            .validate(&block, &context, NETWORK)
            .map_err(|e| anyhow::anyhow!("measured block: {e}"))?;
        times.push(started.elapsed());
        std::hint::black_box(after);
    }
    Ok(ValidateReport {
        transfers,
        runs,
        validate_ms: percentile(&times, 50.0).map_or(f64::NAN, ms),
        max_ms: times.iter().max().copied().map_or(f64::NAN, ms),
    })
}

impl ValidateReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "validate: a block of {} transfers\n  median {:.1} ms, slowest {:.1} ms over {} runs",
            self.transfers, self.validate_ms, self.max_ms, self.runs
        )
    }
}
