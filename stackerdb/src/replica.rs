//! One node's replica of one Stacker DB: the write rules, the clock, evidence and
//! garbage collection, over the durable [`Store`] (seed 001, "Stacker DBs": the
//! write rules, the equivocation throttle and `garbage-collect?`).
//!
//! A write is checked in this order, and the first failure is its reason: the slot
//! exists, the version is not 0 (reserved for the empty chunk), the data fits, the
//! signature recovers a low-S writer, the policy lets that writer write the slot, and
//! the chunk is strictly newer than what the slot holds ([`crate::order`]). Only then is
//! it stored, flushed and acknowledged. A validly signed chunk at the version the slot
//! already holds, with other data, is equivocation: both chunks are kept as evidence
//! whichever one wins, a pair per version and [`MAX_EVIDENCE_PER_SLOT`] chunks per
//! slot at most, written with the write's own flush, and cleared with the slot when
//! it is garbage-collected.

use std::sync::Arc;

use bitcoin::secp256k1::PublicKey;
use serde_bytes::ByteBuf;

use crate::{
    chunk::{Chunk, SignatureError},
    clock::{SlotClock, VectorClock},
    db::DbId,
    order::{NotNewer, SlotVersion, supersedes},
    policy::DbPolicy,
    store::{Store, StoreError, StoredChunk},
};

/// Chunks of evidence kept per slot and version: one pair proves the equivocation.
pub const MAX_EVIDENCE_PER_VERSION: usize = 2;

/// Chunks of evidence kept per slot, over all versions: a writer that equivocates at
/// version after version is proven by the first few pairs, and cannot make a replica
/// keep more than this many chunks for its slot (the slot's next collection clears
/// them).
pub const MAX_EVIDENCE_PER_SLOT: usize = 8;

/// Bytes of CBOR framing allowed around a chunk's data in a stored record.
const RECORD_OVERHEAD: usize = 1024;

/// Why a write was refused. Each maps to HTTP 403 with its text.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// The slot does not exist.
    #[error("slot {slot} does not exist: the DB has {slots} slots")]
    NoSuchSlot {
        /// The slot written.
        slot: u32,
        /// Slots in the DB.
        slots: u32,
    },
    /// Version 0 is the empty chunk and cannot be written.
    #[error("version 0 is reserved for the empty chunk")]
    VersionZero,
    /// The data is larger than the DB allows.
    #[error("chunk of {len} bytes exceeds the DB's limit of {max}")]
    TooLarge {
        /// Bytes written.
        len: usize,
        /// Largest chunk allowed.
        max: usize,
    },
    /// The signature is unusable.
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    /// The writer may not write this slot.
    #[error("writer {writer} may not write slot {slot}")]
    Unauthorized {
        /// The slot.
        slot: u32,
        /// The recovered writer, hex.
        writer: String,
    },
    /// Not newer than what the slot holds.
    #[error("not newer: {0}")]
    NotNewer(#[from] NotNewer),
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Refused by the DB's rules; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What a slot holds, for reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotValue {
    /// The chunk (None: the empty chunk, version 0).
    pub chunk: Option<Chunk>,
    /// Its writer.
    pub writer: Option<PublicKey>,
}

#[derive(Clone, Debug)]
struct Held {
    chunk: Chunk,
    writer: PublicKey,
    standing: SlotVersion,
}

/// A policy a replica cannot switch to ([`Replica::set_policy`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a policy of {slots} slots (or a smaller chunk limit) cannot replace one of {held}")]
pub struct PolicyMismatch {
    /// Slots of the policy offered.
    pub slots: u32,
    /// Slots of the replica's.
    pub held: u32,
}

/// A replica of one Stacker DB.
pub struct Replica {
    network: String,
    db: DbId,
    policy: Arc<dyn DbPolicy>,
    store: Store,
    slots: Vec<Option<Held>>,
    gc_epoch: u64,
}

impl Replica {
    /// Opens the replica of `db` from `store`, loading what it holds. Stored chunks for
    /// slots the policy no longer has, or whose writer no longer decodes, are skipped.
    pub fn open(
        network: impl Into<String>,
        db: DbId,
        policy: Arc<dyn DbPolicy>,
        store: Store,
    ) -> Result<Replica, StoreError> {
        let mut slots = vec![None; policy.slot_count() as usize];
        let max_record = policy.max_chunk_bytes() + RECORD_OVERHEAD;
        for stored in store.chunks(&db, max_record)? {
            let Ok(writer) = PublicKey::from_slice(&stored.writer) else {
                continue;
            };
            let standing = SlotVersion {
                version: stored.chunk.version,
                hash: stored.chunk.data_hash(),
            };
            if let Some(slot) = slots.get_mut(stored.chunk.slot as usize) {
                *slot = Some(Held {
                    chunk: stored.chunk,
                    writer,
                    standing,
                });
            }
        }
        Ok(Replica {
            network: network.into(),
            gc_epoch: store.gc_epoch(&db)?,
            db,
            policy,
            store,
            slots,
        })
    }

    /// The DB's id.
    pub fn db(&self) -> &DbId {
        &self.db
    }

    /// Replaces the policy (a boot DB's, at a term's start: the new producers' slot
    /// keys), keeping what the slots hold: the next garbage collection (the term's
    /// first burn block) clears the previous term's chunks. Writes from now on are
    /// judged by the new policy. Refused, and nothing changed, if the new policy has
    /// another slot count or a smaller chunk limit: the slots and their clock would no
    /// longer match the DB's neighbours'.
    pub fn set_policy(&mut self, policy: Arc<dyn DbPolicy>) -> Result<(), PolicyMismatch> {
        if policy.slot_count() != self.policy.slot_count()
            || policy.max_chunk_bytes() < self.policy.max_chunk_bytes()
        {
            return Err(PolicyMismatch {
                slots: policy.slot_count(),
                held: self.policy.slot_count(),
            });
        }
        self.policy = policy;
        Ok(())
    }

    /// Applies a write. `Ok` means it is stored durably.
    pub fn write(&mut self, chunk: Chunk) -> Result<SlotVersion, WriteError> {
        let standing = self.write_unflushed(chunk)?;
        self.flush()?;
        Ok(standing)
    }

    /// Applies a write without flushing it: it must not be acknowledged, announced or
    /// served as durable until [`Replica::flush`] returns `Ok`. Group commit: a batch of
    /// writes, one flush, then every acknowledgement. If the flush fails, memory may be
    /// ahead of disk; a restart reloads what the disk holds.
    pub fn write_unflushed(&mut self, chunk: Chunk) -> Result<SlotVersion, WriteError> {
        let slots = self.policy.slot_count();
        if chunk.slot >= slots {
            return Err(Rejection::NoSuchSlot {
                slot: chunk.slot,
                slots,
            }
            .into());
        }
        if chunk.version == 0 {
            return Err(Rejection::VersionZero.into());
        }
        let max = self.policy.max_chunk_bytes();
        if chunk.data.len() > max {
            return Err(Rejection::TooLarge {
                len: chunk.data.len(),
                max,
            }
            .into());
        }
        let hash = chunk.data_hash();
        // A byte-identical copy of the held chunk (a replica catching up hears of it
        // from several neighbours) was checked when it was first written: skip the
        // signature recovery, the most expensive step.
        if self.slots.get(chunk.slot as usize).is_some_and(|held| {
            held.as_ref().is_some_and(|held| {
                held.standing.version == chunk.version
                    && held.standing.hash == hash
                    && held.chunk.signature == chunk.signature
            })
        }) {
            return Err(Rejection::NotNewer(NotNewer::Duplicate).into());
        }
        let writer = chunk
            .recover_writer_with_hash(&self.network, &self.db, &hash)
            .map_err(Rejection::from)?;
        if !self
            .policy
            .auth_write(chunk.slot, chunk.version, &hash, &writer)
        {
            return Err(Rejection::Unauthorized {
                slot: chunk.slot,
                writer: hex::encode(writer.serialize()),
            }
            .into());
        }
        let candidate = SlotVersion {
            version: chunk.version,
            hash,
        };
        let current = self.held(chunk.slot);
        if let Some(held) = &current
            && held.standing.version == candidate.version
            && held.standing.hash != candidate.hash
        {
            self.keep_evidence(&held.chunk, &held.standing.hash)?;
            self.keep_evidence(&chunk, &hash)?;
        }
        let standing = current.map_or(SlotVersion::EMPTY, |h| h.standing);
        supersedes(&standing, &candidate).map_err(Rejection::from)?;

        self.store.put_chunk_unflushed(
            &self.db,
            &StoredChunk {
                chunk: chunk.clone(),
                writer: ByteBuf::from(writer.serialize().to_vec()),
            },
        )?;
        let slot = chunk.slot as usize;
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(Held {
                chunk,
                writer,
                standing: candidate,
            });
        }
        Ok(candidate)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    fn held(&self, slot: u32) -> Option<Held> {
        self.slots.get(slot as usize).cloned().flatten()
    }

    /// Keeps `chunk` as evidence, within the bounds; written with the next flush.
    fn keep_evidence(&self, chunk: &Chunk, hash: &[u8; 32]) -> Result<(), StoreError> {
        if self
            .store
            .evidence_count(&self.db, chunk.slot, Some(chunk.version))
            >= MAX_EVIDENCE_PER_VERSION
            || self.store.evidence_count(&self.db, chunk.slot, None) >= MAX_EVIDENCE_PER_SLOT
        {
            return Ok(());
        }
        self.store.put_evidence_unflushed(&self.db, chunk, hash)
    }

    /// What `slot` holds (the empty chunk for an unwritten or out-of-range slot).
    pub fn read(&self, slot: u32) -> SlotValue {
        match self.held(slot) {
            Some(held) => SlotValue {
                chunk: Some(held.chunk),
                writer: Some(held.writer),
            },
            None => SlotValue {
                chunk: None,
                writer: None,
            },
        }
    }

    /// The replica's vector clock.
    pub fn clock(&self) -> VectorClock {
        VectorClock {
            slots: self
                .slots
                .iter()
                .map(|held| {
                    held.as_ref()
                        .map_or(SlotClock::EMPTY, |h| SlotClock::from(&h.standing))
                })
                .collect(),
        }
    }

    /// One slot's clock entry (`None` for a slot the DB does not have), without
    /// building the whole clock.
    pub fn slot_clock(&self, slot: u32) -> Option<SlotClock> {
        self.slots.get(slot as usize).map(|held| {
            held.as_ref()
                .map_or(SlotClock::EMPTY, |h| SlotClock::from(&h.standing))
        })
    }

    /// The number of slots.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Equivocation evidence: every pair of validly signed chunks seen at one version.
    pub fn evidence(&self) -> Result<Vec<Chunk>, StoreError> {
        self.store
            .evidence(&self.db, self.policy.max_chunk_bytes() + RECORD_OVERHEAD)
    }

    /// On a burn block: when the policy's latest collection at or below `burn_height`
    /// is past the replica's GC epoch, resets every garbage slot to the empty chunk
    /// and moves to that epoch, durably. Returns the slots reset. A replayed burn
    /// block (after a restart) changes nothing.
    pub fn on_burn_block(&mut self, burn_height: u64) -> Result<Vec<u32>, StoreError> {
        let Some(epoch) = self.policy.last_collection(burn_height) else {
            return Ok(Vec::new());
        };
        if epoch <= self.gc_epoch {
            return Ok(Vec::new());
        }
        let reset: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, held)| {
                let held = held.as_ref()?;
                self.policy
                    .is_garbage(
                        slot as u32,
                        held.standing.version,
                        &held.standing.hash,
                        &held.writer,
                    )
                    .then_some(slot as u32)
            })
            .collect();
        self.store.collect_garbage(&self.db, &reset, epoch)?;
        for slot in &reset {
            if let Some(entry) = self.slots.get_mut(*slot as usize) {
                *entry = None;
            }
        }
        self.gc_epoch = epoch;
        Ok(reset)
    }

    /// The burn height of the last garbage collection (0: never). Replicas sync only
    /// with neighbours at the same epoch, so a neighbour that has not collected yet
    /// cannot hand back the chunks just collected.
    pub fn gc_epoch(&self) -> u64 {
        self.gc_epoch
    }
}
