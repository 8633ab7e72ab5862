//! Transactions from the burnchain and from peers: enrollments, key registrations,
//! announcements and stake registrations (any Bitcoin transaction), tenure changes
//! and chain transactions must decode or fail cleanly, and Bitcoin's transaction checks
//! must judge any transaction without a panic (an enrollment's 20 outputs of huge
//! values once overflowed a sum here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_chain::{
    block::Tx,
    burnchain::regtest::check_sanity,
    ops::announce::Announcement,
    ops::enrollment::{self, Magic, Payment},
    ops::key_registration::KeyRegistration,
    ops::stake,
    tenure_change::TenureChange,
};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(tx) = bitcoin::consensus::deserialize::<bitcoin::Transaction>(bytes) {
        // Bitcoin's own transaction checks, as the embedded burnchain applies them.
        let _ = check_sanity(&tx, false);
        let _ = check_sanity(&tx, true);
        for magic in [Magic::Mainnet, Magic::Testnet, Magic::Regtest] {
            let _ = enrollment::parse(&tx, magic, Payment::Pox(&[]));
            let _ = enrollment::parse(&tx, magic, Payment::Burn);
            let _ = stake::parse(&tx, magic);
            let _ = KeyRegistration::parse(&tx, magic);
            if let Some(input) = tx.input.first() {
                let _ = Announcement::parse(&tx, &input.previous_output, magic);
            }
        }
    }
    let _ = enrollment::EnrollmentData::from_bytes(bytes, Magic::Regtest);
    if let Ok(change) = TenureChange::from_bytes(bytes) {
        assert_eq!(TenureChange::from_bytes(&change.to_bytes()), Ok(change));
    }
    // Chain transactions travel inside blocks; decode one on its own too.
    if let Ok(tx) = Tx::from_bytes(bytes) {
        let _ = tx.id();
    }
});
