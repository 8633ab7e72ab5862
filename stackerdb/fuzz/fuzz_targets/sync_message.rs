//! Sync messages arrive from any peer: decoding, and everything done with a decoded
//! message before it reaches a replica, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_stackerdb::{
    DbId, VectorClock,
    sync::{SyncBody, message},
};

/// The node's bound on one sync message.
const LIMIT: usize = 3 * 1024 * 1024;

fuzz_target!(|bytes: &[u8]| {
    let Ok(msg) = message::decode(bytes, LIMIT) else {
        return;
    };
    let Ok(db) = DbId::new("fuzz.db") else {
        return;
    };
    let ours = VectorClock::empty(300);
    match msg.body {
        SyncBody::Announce { slot, entry } => {
            let _ = ours.slots.get(slot as usize).map(|e| entry > *e);
        }
        SyncBody::ClockDigest(digest) => {
            let _ = ours.differing_ranges(&digest);
        }
        SyncBody::Clock(part) => {
            let _ = ours.overlaid(&part);
            let _ = part.entries().count();
        }
        SyncBody::Pull(slots) => {
            let _ = slots.len();
        }
        SyncBody::Chunks(chunks) => {
            for chunk in chunks {
                let _ = chunk.recover_writer("fuzz", &db);
            }
        }
    }
    // What decodes re-encodes to something that decodes to the same message.
    if let Ok(again) = message::decode(bytes, LIMIT) {
        if let Ok(encoded) = message::encode(&again) {
            assert_eq!(message::decode(&encoded, usize::MAX).ok(), Some(again));
        }
    }
});
