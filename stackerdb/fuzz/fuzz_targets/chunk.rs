//! A chunk as peers and files carry it (CBOR): decoding it and recovering its signer
//! must never panic, whatever the signature bytes say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_stackerdb::{Chunk, DbId};

fuzz_target!(|bytes: &[u8]| {
    let Ok(chunk) = serde_cbor::from_slice::<Chunk>(bytes) else {
        return;
    };
    let Ok(db) = DbId::new("fuzz.db") else {
        return;
    };
    let hash = chunk.data_hash();
    let _ = chunk.recover_writer_with_hash("fuzz", &db, &hash);
});
