//! An acknowledged write survives a power cut, not only the process being killed.
//!
//! The store runs on [`LossyFs`], a FUSE file system that keeps only what `fsync` made
//! durable. A writer process writes chunks and reports each one acknowledged (its
//! [`Store::put_chunk`] returned), waiting for the test after each; the power is cut
//! right after an acknowledgement, the
//! writer is killed with SIGKILL, and the store is opened again on what the disk held:
//! every acknowledged chunk must be there, and the store must go on taking writes.
//!
//! sled 0.34's own `flush` ends in `sync_file_range`, which makes nothing durable here
//! (nor, on a real disk, the file's growth or the device's cache): without the store's
//! own `fsync` this test loses the writes made since sled's last background `fsync`.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use bitcoin::secp256k1::{SECP256K1, SecretKey};
use serde_bytes::ByteBuf;
use tenure_stackerdb::{Chunk, DbId, Store, store::StoredChunk};
use tenure_tests::lossy_fs;

const NETWORK: &str = "power-loss";
const SLOTS: u32 = 8;
const MAX_RECORD: usize = 64 * 1024;

fn stored(db: &DbId, slot: u32, version: u64, secret: &SecretKey) -> StoredChunk {
    let data = vec![(slot as u8) ^ (version as u8); 4096];
    StoredChunk {
        chunk: Chunk::sign(NETWORK, db, slot, version, data, secret),
        writer: ByteBuf::from(secret.public_key(SECP256K1).serialize().to_vec()),
    }
}

const TEST: &str = "every_acknowledged_chunk_survives_kill_9_and_a_power_cut_and_the_store_goes_on";

/// The writer: puts chunks one by one and reports each once it is acknowledged,
/// waiting for the test each time, until it is killed (or has written a bounded number).
fn write_until_killed(dir: &Path) {
    let secret = SecretKey::from_slice(&[9; 32]).unwrap();
    let db = DbId::new("test.power").unwrap();
    let store = Store::open(dir).unwrap();
    for n in 0..100_000u64 {
        let (slot, version) = ((n % u64::from(SLOTS)) as u32, n / u64::from(SLOTS) + 1);
        store
            .put_chunk(&db, &stored(&db, slot, version, &secret))
            .unwrap();
        if !lossy_fs::acknowledge(&format!("{slot} {version}")) {
            return;
        }
    }
}

#[test]
fn every_acknowledged_chunk_survives_kill_9_and_a_power_cut_and_the_store_goes_on() {
    if let Some(dir) = lossy_fs::writer_dir() {
        write_until_killed(&dir.join("store"));
        return;
    }
    // The power is cut right after the writer's 400th acknowledgement, and the
    // machine comes back with only what was durable.
    let cut =
        lossy_fs::power_cut(TEST, 400).expect("the lossy file system needs /dev/fuse and root");
    let acknowledged: Vec<(u32, u64)> = cut
        .acknowledged
        .iter()
        .map(|line| {
            let mut fields = line.split(' ').map(|f| f.parse::<u64>().unwrap());
            (fields.next().unwrap() as u32, fields.next().unwrap())
        })
        .collect();

    let secret = SecretKey::from_slice(&[9; 32]).unwrap();
    let db = DbId::new("test.power").unwrap();
    let store = Store::open(&cut.restored.join("store")).unwrap();
    let held = store.chunks(&db, MAX_RECORD).unwrap();
    for slot in 0..SLOTS {
        let newest = acknowledged
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, v)| *v)
            .max()
            .unwrap();
        let version = held
            .iter()
            .find(|s| s.chunk.slot == slot)
            .map(|s| s.chunk.version);
        assert!(
            version >= Some(newest),
            "slot {slot}: version {newest} was acknowledged, the disk held {version:?}"
        );
    }

    // And the store goes on: a new write is taken and read back.
    store
        .put_chunk(&db, &stored(&db, 0, 1_000_000, &secret))
        .unwrap();
    let held = store.chunks(&db, MAX_RECORD).unwrap();
    assert!(
        held.iter()
            .any(|s| s.chunk.slot == 0 && s.chunk.version == 1_000_000)
    );
}
