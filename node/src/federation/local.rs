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
    NetworkId, NodeKey, OverlayHandle,
    localnet::{self, LocalNode},
};

use super::{FedHandle, SignDigests};

/// Loopback nodes of a federation find each other quickly.
fn tune(config: &mut tenure_overlay::OverlayConfig) {
    config.discovery_interval = Duration::from_millis(300);
}

/// A running federation of members in this process.
pub struct LocalFederation {
    /// Each member's overlay node.
    pub overlays: Vec<OverlayHandle>,
    /// Each member.
    pub members: Vec<FedHandle>,
    /// Each member's id, in the order of `members`.
    pub ids: Vec<MemberId>,
    /// What a member is made of, to start it again: its overlay key, member key
    /// pair and Noise key.
    identities: Vec<(NodeKey, Keypair, Vec<u8>)>,
    directory: Vec<ChannelKey>,
    network: NetworkId,
    stores: Option<std::path::PathBuf>,
}

/// How long `members` nodes on one machine may take to connect every one to every
/// other: n² connections, each a Noise handshake (measured: a hundred took longer
/// than 30 s).
pub fn connect_deadline(members: usize) -> Duration {
    let members = u32::try_from(members).unwrap_or(u32::MAX);
    Duration::from_secs(30).saturating_add(Duration::from_millis(300).saturating_mul(members))
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
        let keys: Vec<NodeKey> = (0..count).map(|_| NodeKey::generate()).collect();
        let nodes = localnet::start_keyed(keys.clone(), &network, tune).await?;
        let mut overlays = Vec::new();
        let mut pending = Vec::new();
        let mut identities = Vec::new();
        for (
            LocalNode {
                handle: overlay,
                events,
            },
            node_key,
        ) in nodes.into_iter().zip(keys)
        {
            let keypair = Keypair::new(SECP256K1, &mut bitcoin::secp256k1::rand::thread_rng());
            let (private, public) = noise_keypair().context("noise key")?;
            let binding = ChannelKey::bind(&keypair, public, overlay.peer_id().to_bytes());
            overlays.push(overlay.clone());
            identities.push((node_key, keypair, private.clone()));
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
        localnet::wait_for_peers(&overlays, count - 1, connect_deadline(count)).await?;
        Ok(LocalFederation {
            overlays,
            members,
            ids,
            identities,
            directory,
            network,
            stores: stores.map(std::path::Path::to_path_buf),
        })
    }

    /// Stops member `index` and starts it again from its keys and key store only: a
    /// new process's state, the same identity (overlay key, member key, Noise key).
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let old = self.overlays.get(index).context("no such member")?.clone();
        old.shutdown().await;
        let (node_key, keypair, private) = self
            .identities
            .get(index)
            .context("no such member")?
            .clone();
        let bootstrap = self
            .overlays
            .iter()
            .enumerate()
            .find(|(i, _)| *i != index)
            .map(|(_, o)| o.listen_addrs().to_vec())
            .unwrap_or_default();
        let mut config = localnet::loopback_config(&self.network, &bootstrap);
        tune(&mut config);
        let (overlay, events) = tenure_overlay::spawn(config, node_key).await?;
        // The old member's task lets go of its key store as it ends.
        let key_store = match &self.stores {
            Some(dir) => {
                let path = dir.join(index.to_string());
                let started = std::time::Instant::now();
                loop {
                    match KeyStore::open(&path) {
                        Ok(store) => break Some(store),
                        Err(_) if started.elapsed() < Duration::from_secs(10) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None => None,
        };
        let member = super::spawn(
            overlay.clone(),
            events,
            keypair,
            private,
            self.directory.clone(),
            SignDigests,
            key_store,
        )
        .await?;
        if let Some(slot) = self.overlays.get_mut(index) {
            *slot = overlay.clone();
        }
        if let Some(slot) = self.members.get_mut(index) {
            *slot = member;
        }
        let others = self.overlays.len().saturating_sub(1);
        localnet::wait_for_peers(&self.overlays, others, connect_deadline(others + 1)).await?;
        Ok(())
    }

    /// Every member runs the DKG for an equal-weight roster of everyone.
    pub async fn dkg(&self, shares: u16, threshold: u16) -> anyhow::Result<Vec<Arc<KeyShare>>> {
        self.dkg_for(shares, threshold, b"bench").await
    }

    /// Every member runs the DKG of `context` (a term, say) for an equal-weight
    /// roster of everyone.
    pub async fn dkg_for(
        &self,
        shares: u16,
        threshold: u16,
        context: &[u8],
    ) -> anyhow::Result<Vec<Arc<KeyShare>>> {
        let roster = Roster::equal(self.ids.clone(), shares, threshold)?;
        let results = join_all(
            self.members
                .iter()
                .map(|m| m.dkg(roster.clone(), context.to_vec(), 0)),
        )
        .await;
        Ok(results.into_iter().collect::<Result<_, _>>()?)
    }

    /// What all members' channels sent, summed, as of their last DKG or signature.
    pub fn channel_stats(&self) -> tenure_frost_fed::channel::ChannelStats {
        let mut sum = tenure_frost_fed::channel::ChannelStats::default();
        for stats in self.members.iter().map(FedHandle::channel_stats) {
            sum.messages += stats.messages;
            sum.retransmissions += stats.retransmissions;
            sum.acks += stats.acks;
            sum.handshakes += stats.handshakes;
        }
        sum
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
