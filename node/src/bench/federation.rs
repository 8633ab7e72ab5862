//! `tenure bench dkg` and `tenure bench sign`: a federation of real members, each an
//! overlay node on loopback in this process, running the weighted DKG and signing
//! over Noise channels carried by request-response.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tenure_frost_fed::sign::verify_bip340;

use super::{ms, percentile};
use crate::{
    federation::{SignFault, local::LocalFederation},
    process_stats,
};

/// The DKG benchmark's figures.
#[derive(Debug, Serialize)]
pub struct DkgReport {
    /// Members.
    pub members: usize,
    /// Shares of the key.
    pub shares: u16,
    /// Shares needed to sign.
    pub threshold: u16,
    /// Wall time for the members' overlay nodes to start and connect every one to
    /// every other (before the DKG).
    pub connect_ms: f64,
    /// Wall time after connecting until the overlay nodes' background work (DHT
    /// lookups started while connecting) stopped falling: a producer set is connected
    /// long before its DKG, so the DKG is measured on a settled overlay.
    pub settle_ms: f64,
    /// CPU cores the connected, settled members used doing nothing, just before the
    /// DKG: the overlay's own cost, which every figure below includes.
    pub idle_cores: f64,
    /// Wall time from start until every member holds its certified key share.
    pub dkg_ms: f64,
    /// CPU time of the whole process (all members) during the DKG.
    pub cpu_ms: f64,
    /// The same per member: what one member's machine would spend.
    pub cpu_ms_per_member: f64,
    /// Round 1 (commitments by echo broadcast), at the slowest member.
    pub round1_ms: f64,
    /// Round 2 (shares checked, key computed), at the slowest member.
    pub round2_ms: f64,
    /// Certification (every member's certificate in), at the slowest member.
    pub certify_ms: f64,
    /// Overlay requests each member sent per DKG round (3 rounds); each carries every
    /// frame queued for that member meanwhile (shares, echoes, acks).
    pub requests_per_member_per_round: f64,
    /// Channel messages each member sent per round, first copies only.
    pub messages_per_member_per_round: f64,
    /// Channel messages each member sent again per round (no ack in time).
    pub retransmissions_per_member_per_round: f64,
    /// Acknowledgements each member sent per round.
    pub acks_per_member_per_round: f64,
    /// Handshake frames each member sent in the whole DKG.
    pub handshakes_per_member: f64,
}

/// A window over which the idle CPU use is read.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// The longest wait for the overlay to settle.
const SETTLE_MAX: Duration = Duration::from_secs(40);

/// Waits until the process's CPU use over [`IDLE_WINDOW`] stops falling (by less than
/// a tenth from one window to the next) below three quarters of the machine (a
/// saturated machine cannot show it falling), at most [`SETTLE_MAX`]; returns how long
/// it took and the cores used in the last window. Small federations settle at once.
async fn settle(members: usize) -> (Duration, f64) {
    let started = Instant::now();
    let saturated = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64) * 0.75;
    let mut last: Option<f64> = None;
    loop {
        let cpu_before = process_stats::cpu_time();
        tokio::time::sleep(IDLE_WINDOW).await;
        let cores = process_stats::cpu_time()
            .saturating_sub(cpu_before)
            .as_secs_f64()
            / IDLE_WINDOW.as_secs_f64();
        let settled = (cores < saturated && last.is_some_and(|previous| cores > previous * 0.9))
            || members <= 10;
        if settled || started.elapsed() >= SETTLE_MAX {
            return (started.elapsed(), cores);
        }
        last = Some(cores);
    }
}

/// Runs the DKG benchmark.
pub async fn dkg(members: usize, shares: u16, threshold: u16) -> anyhow::Result<DkgReport> {
    let connect_started = Instant::now();
    let federation = LocalFederation::start(members, "bench-dkg", None).await?;
    let connect = connect_started.elapsed();
    let (settle, idle_cores) = settle(members).await;
    let frames_before = federation.requests_sent();
    let stats_before = federation.channel_stats();
    let cpu_before = process_stats::cpu_time();
    let started = Instant::now();
    let keys = federation.dkg(shares, threshold).await?;
    let elapsed = started.elapsed();
    let cpu = process_stats::cpu_time().saturating_sub(cpu_before);
    let frames = federation.requests_sent().saturating_sub(frames_before);
    let stats = federation.channel_stats();
    let per_round =
        |after: u64, before: u64| after.saturating_sub(before) as f64 / members.max(1) as f64 / 3.0;
    let timings: Vec<_> = federation
        .members
        .iter()
        .filter_map(|m| m.last_dkg_timings())
        .collect();
    let slowest = |phase: fn(&tenure_frost_fed::dkg::DkgTimings) -> Duration| {
        ms(timings.iter().map(phase).max().unwrap_or_default())
    };
    let first = keys.first().context("no key")?;
    anyhow::ensure!(
        keys.iter().all(|k| k.public == first.public),
        "members ended with different keys"
    );
    federation.stop().await;
    Ok(DkgReport {
        members,
        shares,
        threshold,
        connect_ms: ms(connect),
        settle_ms: ms(settle),
        idle_cores,
        dkg_ms: ms(elapsed),
        cpu_ms: ms(cpu),
        cpu_ms_per_member: ms(cpu) / members.max(1) as f64,
        round1_ms: slowest(|t| t.round1),
        round2_ms: slowest(|t| t.round2),
        certify_ms: slowest(|t| t.certify),
        requests_per_member_per_round: frames as f64 / members as f64 / 3.0,
        messages_per_member_per_round: per_round(stats.messages, stats_before.messages),
        retransmissions_per_member_per_round: per_round(
            stats.retransmissions,
            stats_before.retransmissions,
        ),
        acks_per_member_per_round: per_round(stats.acks, stats_before.acks),
        handshakes_per_member: per_round(stats.handshakes, stats_before.handshakes) * 3.0,
    })
}

/// The signing benchmark's figures.
#[derive(Debug, Serialize)]
pub struct SignReport {
    /// Members.
    pub members: usize,
    /// Shares of the key.
    pub shares: u16,
    /// Shares needed to sign.
    pub threshold: u16,
    /// Requests made with every member up (and the faulty ones misbehaving).
    pub signatures: usize,
    /// Median time from request to a verified signature at the requester.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
    /// CPU time of the whole process per signature, divided among the members: what
    /// one member's machine spends on a signature.
    pub cpu_ms_per_signature_per_member: f64,
    /// Signatures measured with one member crashing as the request goes out.
    pub crashed_signatures: usize,
    /// Median with one member crashed mid-round.
    pub crashed_p50_ms: f64,
    /// 99th percentile with one member crashed mid-round.
    pub crashed_p99_ms: f64,
    /// Shares held by members that misbehave for every request (`--faulty`).
    pub faulty_shares: u32,
    /// How they misbehave (`--fault`).
    pub fault: String,
    /// Requests signed of those made with every member up (faulty ones included).
    pub signed: usize,
    /// The most signing sessions one of those requests needed (as its signing
    /// coordinator reported).
    pub sessions_max: u32,
}

/// Which members misbehave in the signing benchmark, and how.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Members holding at most this many shares misbehave.
    pub shares: u16,
    /// `silent`, `slow`, `invalid-share`, `incomplete`, `wrong-number`,
    /// `equivocate`, or `all` (the faults in turn, one per faulty member).
    pub kind: String,
}

impl Faults {
    /// The fault of the `i`-th faulty member.
    fn of(&self, i: usize) -> anyhow::Result<SignFault> {
        if self.kind == "all" {
            return SignFault::ALL
                .get(i % SignFault::ALL.len())
                .copied()
                .context("no fault");
        }
        SignFault::from_name(&self.kind).with_context(|| {
            format!(
                "unknown fault {:?} (silent, slow, invalid-share, incomplete, wrong-number, equivocate, all)",
                self.kind
            )
        })
    }
}

/// How long a crashed member stays down.
const CRASH: Duration = Duration::from_secs(3);

/// Runs the signing benchmark.
pub async fn sign(
    members: usize,
    shares: u16,
    threshold: u16,
    signatures: usize,
    crashed_signatures: usize,
    faults: Faults,
) -> anyhow::Result<SignReport> {
    let federation = LocalFederation::start(members, "bench-sign", None).await?;
    let keys = federation.dkg(shares, threshold).await?;
    let key = keys.first().context("no key")?.clone();
    // The last members misbehave, as many as hold at most `faults.shares` shares.
    let mut faulty_shares = 0u32;
    let mut faulty = 0usize;
    for (member, weight) in key.roster.members().iter().rev() {
        if faulty_shares + u32::from(*weight) > u32::from(faults.shares) {
            break;
        }
        let index = key.roster.index_of(member).context("member")?;
        let handle = federation.members.get(index).context("member")?;
        handle.misbehave(Some(faults.of(faulty)?)).await;
        faulty_shares += u32::from(*weight);
        faulty += 1;
    }
    let honest = members.saturating_sub(faulty).max(1);
    let mut latencies = Vec::new();
    let mut signed = 0;
    let mut sessions_max = 0;
    let cpu_before = process_stats::cpu_time();
    for i in 0..signatures {
        // Honest members ask; faulty ones may coordinate.
        let requester = federation.members.get(i % honest).context("member")?;
        let payload = format!("block {i}").into_bytes();
        let started = Instant::now();
        let Ok((record, sessions)) = requester.sign_counted(payload).await else {
            continue;
        };
        latencies.push(started.elapsed());
        sessions_max = sessions_max.max(sessions);
        verify_bip340(&key.public, &record.message, &record.signature)?;
        signed += 1;
    }
    let cpu = process_stats::cpu_time().saturating_sub(cpu_before);
    let cpu_ms_per_signature_per_member =
        ms(cpu) / signatures.max(1) as f64 / members.max(1) as f64;
    for handle in &federation.members {
        handle.misbehave(None).await;
    }
    let mut crashed = Vec::new();
    for i in 0..crashed_signatures {
        let requester = federation.members.get(i % members).context("member")?;
        let victim = federation
            .members
            .get((i + 1 + i / members) % members)
            .context("member")?;
        let payload = format!("block under a crash {i}").into_bytes();
        let started = Instant::now();
        let signed = requester.sign(payload);
        // The victim crashes as the request reaches it: it may have committed nonces
        // and then goes silent.
        let crash = async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            victim.crash_for(CRASH).await;
        };
        let (record, ()) = tokio::join!(signed, crash);
        let record = record?;
        crashed.push(started.elapsed());
        verify_bip340(&key.public, &record.message, &record.signature)?;
        // Let the victim come back before the next round.
        tokio::time::sleep(CRASH.saturating_sub(started.elapsed()) + Duration::from_millis(200))
            .await;
    }
    federation.stop().await;
    let figure = |samples: &[Duration], p| percentile(samples, p).map_or(f64::NAN, ms);
    Ok(SignReport {
        members,
        shares,
        threshold,
        signatures,
        p50_ms: figure(&latencies, 50.0),
        p99_ms: figure(&latencies, 99.0),
        cpu_ms_per_signature_per_member,
        crashed_signatures: crashed.len(),
        crashed_p50_ms: figure(&crashed, 50.0),
        crashed_p99_ms: figure(&crashed, 99.0),
        faulty_shares,
        fault: if faulty_shares > 0 {
            faults.kind
        } else {
            "none".to_owned()
        },
        signed,
        sessions_max,
    })
}

impl DkgReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "dkg: {} members, {} shares, threshold {} (members connected in {:.0} ms, settled in {:.0} ms, idle {:.2} cores)\n  wall {:.0} ms, CPU {:.0} ms (all members), {:.0} ms per member\n  phases at the slowest member: round 1 {:.0} ms, round 2 {:.0} ms, certify {:.0} ms\n  per member per round: {:.1} requests, {:.1} messages, {:.1} sent again, {:.1} acks; {:.1} handshake frames per member",
            self.members,
            self.shares,
            self.threshold,
            self.connect_ms,
            self.settle_ms,
            self.idle_cores,
            self.dkg_ms,
            self.cpu_ms,
            self.cpu_ms_per_member,
            self.round1_ms,
            self.round2_ms,
            self.certify_ms,
            self.requests_per_member_per_round,
            self.messages_per_member_per_round,
            self.retransmissions_per_member_per_round,
            self.acks_per_member_per_round,
            self.handshakes_per_member
        )
    }
}

impl SignReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "sign: {} members, {} shares, threshold {}\n  faulty shares {} ({}): p50 {:.1} ms  p99 {:.1} ms  ({} of {} signed)\n  CPU {:.1} ms per signature per member\n  one crashed:       p50 {:.1} ms  p99 {:.1} ms  ({} signatures)",
            self.members,
            self.shares,
            self.threshold,
            self.faulty_shares,
            self.fault,
            self.p50_ms,
            self.p99_ms,
            self.signed,
            self.signatures,
            self.cpu_ms_per_signature_per_member,
            self.crashed_p50_ms,
            self.crashed_p99_ms,
            self.crashed_signatures
        )
    }
}
