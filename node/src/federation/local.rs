//! A federation of members inside one process, each an overlay node on loopback:
//! for the benchmarks and the cross-crate tests.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use bitcoin::secp256k1::{Keypair, SECP256K1};
use futures::future::join_all;
use tenure_frost_fed::{
    KeyShare, MemberId, Roster,
    channel::{ChannelKey, noise_keypair},
    store::KeyStore,
};
use tenure_overlay::{
    NetworkId, OverlayHandle,
    localnet::{self, LocalNode},
};

use super::{FedHandle, SignDigests};

/// A running federation of members in this process.
pub struct LocalFederation {
    /// Each member's overlay node.
    pub overlays: Vec<OverlayHandle>,
    /// Each member.
    pub members: Vec<FedHandle>,
    /// Each member's id, in the order of `members`.
    pub ids: Vec<MemberId>,
}

impl LocalFederation {
    /// Starts `count` members; with `stores`, each keeps its key share in sled under
    /// `stores/<n>`.
    pub async fn start(
        count: usize,
        network: &str,
        stores: Option<&std::path::Path>,
    ) -> anyhow::Result<LocalFederation> {
        anyhow::ensure!(count >= 2, "a federation needs at least 2 members");
        let network = NetworkId::new(network)?;
        let nodes = localnet::start(count, &network, |config| {
            config.discovery_interval = Duration::from_millis(300);
        })
        .await?;
        let mut overlays = Vec::new();
        let mut pending = Vec::new();
        for LocalNode {
            handle: overlay,
            events,
        } in nodes
        {
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
                super::spawn(
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
        localnet::wait_for_peers(&overlays, count - 1, Duration::from_secs(30)).await?;
        Ok(LocalFederation {
            overlays,
            members,
            ids,
        })
    }

    /// Every member runs the DKG for an equal-weight roster of everyone.
    pub async fn dkg(&self, shares: u16, threshold: u16) -> anyhow::Result<Vec<Arc<KeyShare>>> {
        let roster = Roster::equal(self.ids.clone(), shares, threshold)?;
        let results = join_all(
            self.members
                .iter()
                .map(|m| m.dkg(roster.clone(), b"bench".to_vec(), 0)),
        )
        .await;
        Ok(results.into_iter().collect::<Result<_, _>>()?)
    }

    /// Overlay requests all members sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.overlays
            .iter()
            .map(|o| o.metrics().snapshot().rpc_requests_sent)
            .sum()
    }

    /// Shuts every member's overlay node down.
    pub async fn stop(self) {
        for overlay in &self.overlays {
            overlay.shutdown().await;
        }
    }
}
