//! `tenure bench produce --simulated`: block production at the SIP's scale, past what
//! one machine's cores can run live, in the shared seeded simulation
//! ([`tenure_tests::producer_sim`]): real weighted DKG, real FROST signing with every
//! member's validator, real block validation at every producer, over a simulated
//! wide-area network.
//!
//! The network: one-way latencies drawn from `--latency-ms` (default 20–200 ms) for
//! every message, `--loss` (default 1%) of producer messages lost, and federation
//! frames picked by the loss arriving a retransmission later (the channels resend
//! them). Every producer holds 100 / `--producers` of the shares (one each at the
//! SIP's 100), and the producers run the protocol's defaults except the leader
//! timeout: 3 s, since here a round trip alone can take 400 ms and the per-producer
//! allowance the defaults add is for producers sharing one machine's cores.
//!
//! Figures are in simulated time: `p50_ms`/`p99_ms` from the leader proposing a block
//! to a producer applying it (one sample per block and producer),
//! `transfer_p50_ms`/`transfer_p99_ms` from a transfer's submission to the last
//! producer applying it; the block latency split into its phases (`sign_p50_ms`:
//! proposal, with which the leader asks for the signature, to a producer first
//! learning the signature; `propagate_p50_ms`: to a producer applying the block). `wall_s`
//! is what the run took on this machine.

use std::time::{Duration, Instant};

use serde::Serialize;
use tenure_chain::produce::ProducerConfig;
use tenure_tests::{
    producer_sim::{ProducerSet, ProducerSim, ProducerSimConfig, term},
    sim::Faults,
};

use super::{ms, percentile};

/// The term the simulation runs.
const TERM: u64 = 2;

/// Simulated time before load starts: the first block needs the election.
const WARMUP_MS: u64 = 5_000;

/// Simulated time after the load stops, for the last transfers to land.
const SETTLE_MS: u64 = 5_000;

/// What the simulated production benchmark runs.
#[derive(Clone, Debug)]
pub struct SimulatedProduce {
    /// Producers (they share the 100 shares as evenly as they can).
    pub producers: usize,
    /// Transfers a simulated second.
    pub rate: u64,
    /// Simulated seconds of load.
    pub seconds: u64,
    /// One-way latency range, ms.
    pub latency_ms: (u64, u64),
    /// Share of producer messages lost.
    pub loss: f64,
    /// The run's seed.
    pub seed: u64,
}

/// The simulated production benchmark's figures.
#[derive(Debug, Serialize)]
pub struct SimulatedProduceReport {
    /// Producers.
    pub producers: usize,
    /// The seed.
    pub seed: u64,
    /// Fastest one-way latency, ms.
    pub latency_min_ms: u64,
    /// Slowest one-way latency, ms.
    pub latency_max_ms: u64,
    /// Share of producer messages lost, percent.
    pub loss_percent: f64,
    /// Simulated time run, seconds.
    pub simulated_s: f64,
    /// Blocks produced.
    pub blocks: u64,
    /// Blocks a simulated second.
    pub blocks_per_s: f64,
    /// Proposal to a producer applying the block, median (simulated).
    pub p50_ms: f64,
    /// Proposal to a producer applying the block, 99th percentile (simulated).
    pub p99_ms: f64,
    /// The proposal (and the request for its signature) to a producer learning the
    /// signature, median.
    pub sign_p50_ms: f64,
    /// A producer learning the signature to a producer applying the block, median.
    pub propagate_p50_ms: f64,
    /// Submission to every producer including the transfer, median (simulated).
    pub transfer_p50_ms: f64,
    /// Submission to every producer including the transfer, 99th percentile.
    pub transfer_p99_ms: f64,
    /// Transfers submitted.
    pub transfers_submitted: u64,
    /// Transfers included at every producer.
    pub transfers_included: usize,
    /// Whether every producer ended on one tip.
    pub producers_agree: bool,
    /// This machine's time for the term's DKG among all producers, seconds.
    pub dkg_wall_s: f64,
    /// This machine's time for the whole run, seconds.
    pub wall_s: f64,
}

impl SimulatedProduceReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        format!(
            "{} producers, one-way latency {}–{} ms, {}% loss, seed {} ({:.1} s simulated, \
             {:.1} s on this machine, DKG {:.1} s)\n\
             blocks: {} ({:.2}/s), producers agree: {}\n\
             block latency (proposal to applied): p50 {:.0} ms, p99 {:.0} ms\n\
             phases, p50: proposal to signature {:.0} ms, propagation {:.0} ms\n\
             transfers: {} submitted, {} included; latency p50 {:.0} ms, p99 {:.0} ms",
            self.producers,
            self.latency_min_ms,
            self.latency_max_ms,
            self.loss_percent,
            self.seed,
            self.simulated_s,
            self.wall_s,
            self.dkg_wall_s,
            self.blocks,
            self.blocks_per_s,
            self.producers_agree,
            self.p50_ms,
            self.p99_ms,
            self.sign_p50_ms,
            self.propagate_p50_ms,
            self.transfers_submitted,
            self.transfers_included,
            self.transfer_p50_ms,
            self.transfer_p99_ms,
        )
    }
}

/// The shares of 100 for `producers`: as even as can be, the first ones one more.
fn even_shares(producers: usize) -> Vec<u16> {
    let producers_u16 = u16::try_from(producers).unwrap_or(u16::MAX).max(1);
    let base = 100 / producers_u16;
    let extra = usize::from(100 % producers_u16);
    (0..producers)
        .map(|n| if n < extra { base + 1 } else { base })
        .collect()
}

/// Runs the simulation.
pub fn run(bench: &SimulatedProduce) -> anyhow::Result<SimulatedProduceReport> {
    anyhow::ensure!(
        (4..=100).contains(&bench.producers),
        "4 to 100 producers (each must hold one of the 100 shares)"
    );
    anyhow::ensure!(
        bench.latency_ms.0 <= bench.latency_ms.1,
        "the latency range must be low-high"
    );
    anyhow::ensure!((0.0..1.0).contains(&bench.loss), "loss in [0, 1)");
    let started = Instant::now();
    let set = ProducerSet::new(bench.producers)?;
    let term = term(&set, TERM, &even_shares(bench.producers))?;
    let config = ProducerSimConfig {
        seed: bench.seed,
        faults: Faults {
            loss: bench.loss,
            delay_ms: bench.latency_ms,
            ..Faults::default()
        },
        reliable_federation: true,
        producer: ProducerConfig {
            leader_timeout: Duration::from_secs(3),
            leader_timeout_per_producer: Duration::ZERO,
            ..ProducerConfig::default()
        },
        byzantine: None,
        load_per_s: bench.rate,
    };
    let mut sim = ProducerSim::new(&config, &set, &term);
    let end_ms = WARMUP_MS
        .saturating_add(bench.seconds.saturating_mul(1_000))
        .saturating_add(SETTLE_MS);
    let load_end_ms = end_ms.saturating_sub(SETTLE_MS);
    sim.run_until(load_end_ms);
    sim.set_load(0);
    sim.run_until(end_ms);

    let samples =
        |v: &[u64]| -> Vec<Duration> { v.iter().map(|ms| Duration::from_millis(*ms)).collect() };
    let blocks_latency = samples(&sim.block_latencies_ms);
    let transfers_latency = samples(&sim.transfer_latencies_ms);
    let at = |v: &[Duration], p| percentile(v, p).map(ms).unwrap_or(f64::NAN);
    let blocks = sim.heights().into_iter().max().unwrap_or(0);
    let sign: Vec<Duration> = sim
        .phases()
        .filter_map(|phases| {
            let signed = phases.signed?;
            Some(Duration::from_millis(
                signed.saturating_sub(phases.proposed),
            ))
        })
        .collect();
    let propagate = samples(&sim.propagation_latencies_ms);
    let simulated_s = end_ms as f64 / 1e3;
    Ok(SimulatedProduceReport {
        producers: bench.producers,
        seed: bench.seed,
        latency_min_ms: bench.latency_ms.0,
        latency_max_ms: bench.latency_ms.1,
        loss_percent: bench.loss * 100.0,
        simulated_s,
        blocks,
        blocks_per_s: blocks as f64 / simulated_s,
        p50_ms: at(&blocks_latency, 50.0),
        p99_ms: at(&blocks_latency, 99.0),
        sign_p50_ms: at(&sign, 50.0),
        propagate_p50_ms: at(&propagate, 50.0),
        transfer_p50_ms: at(&transfers_latency, 50.0),
        transfer_p99_ms: at(&transfers_latency, 99.0),
        transfers_submitted: sim.transfers_submitted,
        transfers_included: sim.transfer_latencies_ms.len(),
        producers_agree: sim.agree(),
        dkg_wall_s: term.dkg_time.as_secs_f64(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_are_spread_as_evenly_as_they_can_be_and_add_up_to_100() {
        for producers in [4, 6, 7, 30, 99, 100] {
            let shares = even_shares(producers);
            assert_eq!(shares.len(), producers);
            assert_eq!(shares.iter().map(|s| u32::from(*s)).sum::<u32>(), 100);
            let (low, high) = (shares.iter().min(), shares.iter().max());
            assert!(high.zip(low).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
        }
    }
}
