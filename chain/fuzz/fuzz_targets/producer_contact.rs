//! Producer contacts arrive from peers on the contacts topic: decoding one, judging
//! whatever decodes at the topic's gate (enrolled or not) and offering it to a book
//! must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_chain::produce::contact::{ContactBook, ContactGate, ProducerContact};

fuzz_target!(|bytes: &[u8]| {
    let Ok(contact) = ProducerContact::from_bytes(bytes) else {
        return;
    };
    let mut gate = ContactGate::new("testnet");
    let _ = gate.judge(&contact, 3, false);
    let _ = gate.judge(&contact, 3, true);
    let _ = gate.judge(&contact, 4, true);
    let mut book = ContactBook::new();
    let _ = book.offer(contact.clone());
    let _ = book.offer(contact);
});
