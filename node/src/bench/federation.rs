//! `tenure bench dkg` and `tenure bench sign`: a federation of real members, each an
//! overlay node on loopback in this process, running the weighted DKG and signing
//! over Noise channels carried by request-response.

use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::secp256k1::{Keypair, SECP256K1};
use futures::future::join_all;
use serde::Serialize;
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    channel::{ChannelKey, noise_keypair},
    sign::verify_bip340,
    store::KeyStore,
};
use tenure_overlay::{NetworkId, OverlayHandle};

use super::{ms, percentile};
use crate::{
    federation::{self, FedHandle, SignDigests},
    process_stats,
};

/// A running federation.
struct Federation {
    overlays: Vec<OverlayHandle>,
    members: Vec<FedHandle>,
    ids: Vec<MemberId>,
}

impl Federation {
    /// Starts `count` members; with `stores`, each keeps its key share in sled under
    /// `stores/<n>`.
    async fn start(
        count: usize,
        network: &str,
        stores: Option<&std::path::Path>,
    ) -> anyhow::Result<Federation> {
        anyhow::ensure!(count >= 2, "a federation needs at least 2 members");
        let network = NetworkId::new(network)?;
        let mut overlays = Vec::new();
        let mut pending = Vec::new();
        let mut bootstrap = Vec::new();
        for i in 0..count {
            let mut config = tenure_overlay::OverlayConfig::loopback(network.clone());
            config.bootstrap_peers = bootstrap.clone();
            config.discovery_interval = Duration::from_millis(300);
            let (overlay, events) =
                tenure_overlay::spawn(config, tenure_overlay::NodeKey::generate()).await?;
            if i == 0 {
                bootstrap = overlay.listen_addrs().to_vec();
            }
            let keypair = Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng());
            let (private, public) = noise_keypair().context("noise key")?;
            let binding = ChannelKey::bind(&keypair, public, overlay.peer_id().to_bytes());
            overlays.push(overlay.clone());
            pending.push((overlay, events, keypair, private, binding));
        }
        let directory: Vec<ChannelKey> = pending.iter().map(|p| p.4.clone()).collect();
        let ids = directory.iter().map(|k| k.member).collect();
        let mut members = Vec::new();
        for (overlay, events, keypair, private, _) in pending {
            members.push(
                federation::spawn(
                    overlay,
                    events,
                    keypair,
                    private,
                    directory.clone(),
                    SignDigests,
                    match &stores {
                        Some(dir) => Some(KeyStore::open(&dir.join(members.len().to_string()))?),
                        None => None,
                    },
                )
                .await?,
            );
        }
        // Every member connected to every other: frames go directly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses = join_all(overlays.iter().map(|o| o.status())).await;
            if statuses
                .iter()
                .all(|s| s.as_ref().is_ok_and(|s| s.peers.len() + 1 >= count))
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "members did not connect within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Federation {
            overlays,
            members,
            ids,
        })
    }

    async fn dkg(
        &self,
        shares: u16,
        threshold: u16,
    ) -> anyhow::Result<Vec<std::sync::Arc<KeyShare>>> {
        let roster = Roster::equal(self.ids.clone(), shares, threshold)?;
        let results = join_all(
            self.members
                .iter()
                .map(|m| m.dkg(roster.clone(), b"bench".to_vec())),
        )
        .await;
        results.into_iter().collect()
    }

    fn requests_sent(&self) -> u64 {
        self.overlays
            .iter()
            .map(|o| o.metrics().snapshot().rpc_requests_sent)
            .sum()
    }

    async fn stop(self) {
        for overlay in &self.overlays {
            overlay.shutdown().await;
        }
    }
}

/// The DKG benchmark's figures.
#[derive(Debug, Serialize)]
pub struct DkgReport {
    /// Members.
    pub members: usize,
    /// Shares of the key.
    pub shares: u16,
    /// Shares needed to sign.
    pub threshold: u16,
    /// Wall time from start until every member holds its certified key share.
    pub dkg_ms: f64,
    /// CPU time of the whole process (all members) during the DKG.
    pub cpu_ms: f64,
    /// Overlay requests each member sent per DKG round (3 rounds); each carries every
    /// frame queued for that member meanwhile (shares, echoes, acks).
    pub requests_per_member_per_round: f64,
}

/// Runs the DKG benchmark.
pub async fn dkg(members: usize, shares: u16, threshold: u16) -> anyhow::Result<DkgReport> {
    let federation = Federation::start(members, "bench-dkg", None).await?;
    let frames_before = federation.requests_sent();
    let cpu_before = process_stats::cpu_time();
    let started = Instant::now();
    let keys = federation.dkg(shares, threshold).await?;
    let elapsed = started.elapsed();
    let cpu = process_stats::cpu_time().saturating_sub(cpu_before);
    let frames = federation.requests_sent().saturating_sub(frames_before);
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
        dkg_ms: ms(elapsed),
        cpu_ms: ms(cpu),
        requests_per_member_per_round: frames as f64 / members as f64 / 3.0,
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
    /// Signatures measured with every member up.
    pub signatures: usize,
    /// Median time from request to a verified signature at the requester.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
    /// Signatures measured with one member crashing as the request goes out.
    pub crashed_signatures: usize,
    /// Median with one member crashed mid-round.
    pub crashed_p50_ms: f64,
    /// 99th percentile with one member crashed mid-round.
    pub crashed_p99_ms: f64,
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
) -> anyhow::Result<SignReport> {
    let federation = Federation::start(members, "bench-sign", None).await?;
    let keys = federation.dkg(shares, threshold).await?;
    let key = keys.first().context("no key")?.clone();
    let mut latencies = Vec::new();
    for i in 0..signatures {
        let requester = federation.members.get(i % members).context("member")?;
        let payload = format!("block {i}").into_bytes();
        let started = Instant::now();
        let record = requester.sign(payload).await?;
        latencies.push(started.elapsed());
        verify_bip340(&key.public, &record.message, &record.signature)?;
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
        signatures: latencies.len(),
        p50_ms: figure(&latencies, 50.0),
        p99_ms: figure(&latencies, 99.0),
        crashed_signatures: crashed.len(),
        crashed_p50_ms: figure(&crashed, 50.0),
        crashed_p99_ms: figure(&crashed, 99.0),
    })
}

impl DkgReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "dkg: {} members, {} shares, threshold {}\n  wall {:.0} ms, CPU {:.0} ms (all members)\n  {:.1} requests per member per round",
            self.members,
            self.shares,
            self.threshold,
            self.dkg_ms,
            self.cpu_ms,
            self.requests_per_member_per_round
        )
    }
}

impl SignReport {
    /// The figures for people.
    pub fn to_text(&self) -> String {
        format!(
            "sign: {} members, {} shares, threshold {}\n  all up:            p50 {:.1} ms  p99 {:.1} ms  ({} signatures)\n  one crashed:       p50 {:.1} ms  p99 {:.1} ms  ({} signatures)",
            self.members,
            self.shares,
            self.threshold,
            self.p50_ms,
            self.p99_ms,
            self.signatures,
            self.crashed_p50_ms,
            self.crashed_p99_ms,
            self.crashed_signatures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DKG and signing over real loopback libp2p nodes: four members make a key, sign
    /// twice (once with a member hung), and every signature verifies as BIP340.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn four_members_make_a_key_and_sign_over_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let federation = Federation::start(4, "fed-loopback-test", Some(dir.path()))
            .await
            .unwrap();
        let keys = federation.dkg(100, 67).await.unwrap();
        assert_eq!(keys.len(), 4);
        let key = keys[0].clone();
        assert!(keys.iter().all(|k| k.public == key.public));
        key.check_certificates().unwrap();

        let record = federation.members[1]
            .sign(b"block 1".to_vec())
            .await
            .unwrap();
        verify_bip340(&key.public, &record.message, &record.signature).unwrap();
        let signers = record.verify(&key.public, &key.roster).unwrap();
        assert!(signers.weight >= 67);

        // With one member hung, the other three (75 shares) still sign.
        federation.members[3]
            .crash_for(Duration::from_secs(5))
            .await;
        let record = federation.members[0]
            .sign(b"block 2".to_vec())
            .await
            .unwrap();
        let signers = record.verify(&key.public, &key.roster).unwrap();
        assert!(!signers.members.contains(&federation.ids[3]));
        federation.stop().await;

        // Each member's key share is on disk: a restart reloads it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (i, key) in keys.iter().enumerate().take(3) {
            let store = KeyStore::open(&dir.path().join(i.to_string())).unwrap();
            assert_eq!(store.current().unwrap().unwrap(), **key);
        }
    }

    /// Frames between members that are not connected go by the gossip relay: with
    /// every member relaying, the federation still signs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_sign_through_the_gossip_relay() {
        let federation = Federation::start(3, "fed-relay-test", None).await.unwrap();
        let keys = federation.dkg(100, 67).await.unwrap();
        // Give the relay topic's mesh a moment after the subscriptions.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for member in &federation.members {
            member.relay_only(true).await;
        }
        let relayed_before: u64 = federation
            .overlays
            .iter()
            .map(|o| o.metrics().snapshot().gossip_published)
            .sum();
        let record = federation.members[2]
            .sign(b"relayed".to_vec())
            .await
            .unwrap();
        verify_bip340(&keys[0].public, &record.message, &record.signature).unwrap();
        let relayed: u64 = federation
            .overlays
            .iter()
            .map(|o| o.metrics().snapshot().gossip_published)
            .sum();
        assert!(relayed > relayed_before, "nothing went by the relay");
        federation.stop().await;
    }
}
