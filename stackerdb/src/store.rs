//! Durable storage of chunks and equivocation evidence on sled.
//!
//! Every acknowledged write has been flushed by sled **and synced by the store**
//! ([`crate::disk`]): sled 0.34's own flush ends in `sync_file_range`, which does not
//! make a write survive a power cut, so after each flush the store calls `fdatasync` on
//! sled's log and syncs what else sled wrote. An acknowledged write survives the process
//! being killed (`kill -9`, the node's multi-process test) and a power cut
//! (`tests/power_loss.rs`: a writer killed and the power cut right after an
//! acknowledgement, on a file system that keeps only what `fsync` covered).
//!
//! The on-disk format carries a version in the `meta` tree; a store written
//! by another format version is refused rather than misread. Records are CBOR and are
//! decoded with a bound, and a corrupt record is an error naming its key, never a panic.
//!
//! Layout (all keys start with the DB's length-prefixed id, so DBs never collide):
//! - `chunks`:   db ‖ slot (u32 BE)                      → [`StoredChunk`]
//! - `evidence`: db ‖ slot ‖ version (u64 BE) ‖ data hash → [`Chunk`]

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{
    chunk::Chunk,
    db::DbId,
    disk::{DiskSync, SyncError},
};

/// Version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const META_FORMAT_KEY: &[u8] = b"format";

/// A chunk as stored: the write and its recovered writer (33-byte compressed key), so a
/// restart does not recover every signature again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredChunk {
    /// The write.
    pub chunk: Chunk,
    /// Its writer's compressed public key (named `signer` on disk, as before).
    #[serde(rename = "signer")]
    pub writer: ByteBuf,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("storage failed: {0}")]
    Sled(#[from] sled::Error),
    /// A flushed write could not be made durable.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The data directory holds another format version.
    #[error("the store has format version {found}, this build reads {expected}")]
    Format {
        /// Version on disk.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// A record does not decode.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record's key, hex.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// The sled database holding every Stacker DB of a node.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    disk: Arc<DiskSync>,
    meta: sled::Tree,
    chunks: sled::Tree,
    evidence: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::open(dir)?;
        let disk = Arc::new(DiskSync::open(dir)?);
        let meta = db.open_tree("meta")?;
        match meta.get(META_FORMAT_KEY)? {
            Some(raw) => {
                let found = <[u8; 4]>::try_from(raw.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: "meta/format".into(),
                        reason: format!("{} bytes", raw.len()),
                    })?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                meta.insert(META_FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
                meta.flush()?;
                disk.sync()?;
            }
        }
        Ok(Store {
            meta,
            chunks: db.open_tree("chunks")?,
            evidence: db.open_tree("evidence")?,
            db,
            disk,
        })
    }

    /// Stores `chunk` as the slot's value and flushes.
    pub fn put_chunk(&self, db: &DbId, stored: &StoredChunk) -> Result<(), StoreError> {
        self.put_chunk_unflushed(db, stored)?;
        self.flush()
    }

    /// Stores `chunk` as the slot's value without flushing: not durable until
    /// [`Store::flush`] returns. For group commit: many writes, one flush, then the
    /// acknowledgements.
    pub fn put_chunk_unflushed(&self, db: &DbId, stored: &StoredChunk) -> Result<(), StoreError> {
        let value = serde_cbor::to_vec(stored).map_err(|e| StoreError::Corrupt {
            key: "new chunk".into(),
            reason: e.to_string(),
        })?;
        self.chunks.insert(slot_key(db, stored.chunk.slot), value)?;
        Ok(())
    }

    /// Empties `slots` of `db`, records `burn_height` as the DB's last garbage
    /// collection, and flushes once. The record is written after the slots: sled's log
    /// is sequential, so a durable record means durable resets, and a crash before it
    /// only means the collection runs again.
    pub fn collect_garbage(
        &self,
        db: &DbId,
        slots: &[u32],
        burn_height: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut evidence = sled::Batch::default();
        for slot in slots {
            batch.remove(slot_key(db, *slot));
            for key in self.evidence.scan_prefix(slot_key(db, *slot)).keys() {
                evidence.remove(key?);
            }
        }
        self.chunks.apply_batch(batch)?;
        self.evidence.apply_batch(evidence)?;
        self.meta.insert(gc_key(db), &burn_height.to_be_bytes())?;
        self.flush()
    }

    /// The burn height of `db`'s last garbage collection (0: never).
    pub fn gc_epoch(&self, db: &DbId) -> Result<u64, StoreError> {
        match self.meta.get(gc_key(db))? {
            None => Ok(0),
            Some(raw) => <[u8; 8]>::try_from(raw.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    key: format!("meta/gc/{db}"),
                    reason: format!("{} bytes", raw.len()),
                }),
        }
    }

    /// Every stored chunk of `db`, decoded with `max_record_bytes` as the bound.
    pub fn chunks(
        &self,
        db: &DbId,
        max_record_bytes: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        self.chunks
            .scan_prefix(db_prefix(db))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value, max_record_bytes)
            })
            .collect()
    }

    /// Keeps `chunk` as equivocation evidence (idempotent); durable with the next
    /// [`Store::flush`].
    pub fn put_evidence_unflushed(
        &self,
        db: &DbId,
        chunk: &Chunk,
        hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        let mut key = slot_key(db, chunk.slot);
        key.extend_from_slice(&chunk.version.to_be_bytes());
        key.extend_from_slice(hash);
        let value = serde_cbor::to_vec(chunk).map_err(|e| StoreError::Corrupt {
            key: hex::encode(&key),
            reason: e.to_string(),
        })?;
        self.evidence.insert(key, value)?;
        Ok(())
    }

    /// Evidence chunks kept for `slot`, at `version` or at any.
    pub fn evidence_count(&self, db: &DbId, slot: u32, version: Option<u64>) -> usize {
        let mut prefix = slot_key(db, slot);
        if let Some(version) = version {
            prefix.extend_from_slice(&version.to_be_bytes());
        }
        self.evidence.scan_prefix(prefix).count()
    }

    /// Every evidence chunk of `db`.
    pub fn evidence(&self, db: &DbId, max_record_bytes: usize) -> Result<Vec<Chunk>, StoreError> {
        self.evidence
            .scan_prefix(db_prefix(db))
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value, max_record_bytes)
            })
            .collect()
    }

    /// Makes every write so far durable (chunks and evidence): sled's flush, then the
    /// sync sled leaves out.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.disk.sync()?;
        Ok(())
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
    max: usize,
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: hex::encode(key),
        reason,
    };
    if value.len() > max {
        return Err(corrupt(format!(
            "{} bytes, over the bound of {max}",
            value.len()
        )));
    }
    serde_cbor::from_slice(value).map_err(|e| corrupt(e.to_string()))
}

fn db_prefix(db: &DbId) -> Vec<u8> {
    let id = db.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 4);
    // DbId is at most 128 bytes, so its length fits in one byte.
    key.push(id.len() as u8);
    key.extend_from_slice(id);
    key
}

fn gc_key(db: &DbId) -> Vec<u8> {
    let mut key = b"gc/".to_vec();
    key.extend_from_slice(&db_prefix(db));
    key
}

fn slot_key(db: &DbId, slot: u32) -> Vec<u8> {
    let mut key = db_prefix(db);
    key.extend_from_slice(&slot.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use bitcoin::secp256k1::SecretKey;

    use super::*;

    fn stored(db: &DbId, slot: u32, version: u64) -> StoredChunk {
        let key = SecretKey::from_slice(&[1; 32]).unwrap();
        let chunk = Chunk::sign("t", db, slot, version, vec![slot as u8; 10], &key);
        StoredChunk {
            chunk,
            writer: ByteBuf::from(vec![2; 33]),
        }
    }

    /// `open` once the directory's lock is free: sled's background writes can hold it
    /// for a moment after the previous handle was dropped (a process restart releases
    /// it at exit); wait for that, boundedly.
    fn when_unlocked(dir: &std::path::Path) -> Result<Store, StoreError> {
        for _ in 0..250 {
            match Store::open(dir) {
                Err(StoreError::Sled(sled::Error::Io(e))) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        panic!("the store's lock was never released");
    }

    #[test]
    fn chunks_survive_reopening_and_dbs_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DbId::new("a").unwrap(), DbId::new("ab").unwrap());
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_chunk(&a, &stored(&a, 1, 1)).unwrap();
            store.put_chunk(&b, &stored(&b, 2, 1)).unwrap();
            store.put_chunk(&a, &stored(&a, 1, 2)).unwrap();
        }
        let store = when_unlocked(dir.path()).unwrap();
        let got = store.chunks(&a, 1 << 20).unwrap();
        assert_eq!(got, vec![stored(&a, 1, 2)]);
        assert_eq!(store.chunks(&b, 1 << 20).unwrap().len(), 1);
        assert_eq!(store.gc_epoch(&a).unwrap(), 0);
        store.collect_garbage(&a, &[1], 20).unwrap();
        drop(store);
        let store = when_unlocked(dir.path()).unwrap();
        assert!(store.chunks(&a, 1 << 20).unwrap().is_empty());
        assert_eq!(store.chunks(&b, 1 << 20).unwrap().len(), 1);
        assert_eq!(store.gc_epoch(&a).unwrap(), 20);
        assert_eq!(store.gc_epoch(&b).unwrap(), 0);
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(META_FORMAT_KEY, &9u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            when_unlocked(dir.path()),
            Err(StoreError::Format {
                found: 9,
                expected: 1
            })
        ));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = DbId::new("a").unwrap();
        store
            .chunks
            .insert(slot_key(&db, 3), &b"\xff\x00garbage"[..])
            .unwrap();
        let err = store.chunks(&db, 1 << 20).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&hex::encode(slot_key(&db, 3))));
    }
}
