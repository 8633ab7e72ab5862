//! Burn transactions relayed over the overlay to whoever mines the embedded regtest
//! chain: producers' enrollments, term UTXO payments and announcements reach the miner
//! by gossip, not by a channel inside one process (with bitcoind, a node hands its
//! transactions to bitcoind instead).
//!
//! Rules ([`judge`], the burn-transactions topic's validator):
//!
//! - A message is one Bitcoin transaction in consensus encoding, at most
//!   [`MAX_RELAYED_TX_BYTES`], with nothing after it; anything else is refused and its
//!   sender blamed.
//! - It is forwarded only when the next block could take it: checked against the
//!   node's [`PendingUtxos`] (the best chain's unspent outputs with the node's mempool
//!   applied) by every rule of the embedded chain (inputs unspent and mature, outputs
//!   within inputs, every input a valid taproot key-path spend). So relaying costs an
//!   unspent output (real money on a real chain) and a valid signature: a peer without
//!   a key to coins cannot get a transaction past its first hop.
//! - A transaction that breaks a rule no view can change (malformed, a script or
//!   signature that does not verify, outputs above inputs) blames its sender. One
//!   whose inputs this node does not know unspent, or not yet mature, is dropped
//!   without blame: its view may lag the sender's, or another spend of the same
//!   output came first (the first seen wins, as in Bitcoin Core without replacement).
//! - A full mempool ([`super::regtest::MAX_MEMPOOL`]) drops without blame.
//!
//! Every node takes what it forwards into its own mempool, so each holds what the
//! miner will mine, and the next transaction spending an unconfirmed output checks
//! against it.

use bitcoin::{Transaction, consensus};

use super::regtest::{PendingUtxos, RegtestError};

/// Largest relayed transaction (Bitcoin Core's standardness limit is 400,000 weight
/// units, 100 kB of non-witness data).
pub const MAX_RELAYED_TX_BYTES: usize = 100_000;

/// What the burn-transactions topic does with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayVerdict {
    /// Forward it, and take it into the mempool.
    Forward(Box<Transaction>),
    /// Drop it without blame.
    Ignore(String),
    /// Drop it and blame its sender.
    Reject(String),
}

/// Judges a relayed transaction against `pending` (module docs).
pub fn judge(bytes: &[u8], pending: &PendingUtxos) -> RelayVerdict {
    if bytes.len() > MAX_RELAYED_TX_BYTES {
        return RelayVerdict::Reject(format!(
            "{} bytes, more than a relayed transaction's {MAX_RELAYED_TX_BYTES}",
            bytes.len()
        ));
    }
    let tx: Transaction = match consensus::deserialize(bytes) {
        Ok(tx) => tx,
        Err(e) => return RelayVerdict::Reject(format!("not a transaction: {e}")),
    };
    match pending.check(&tx) {
        Ok(_) => RelayVerdict::Forward(Box::new(tx)),
        Err(
            e @ (RegtestError::MissingInput(_)
            | RegtestError::Immature(_)
            | RegtestError::MempoolFull),
        ) => RelayVerdict::Ignore(e.to_string()),
        Err(e) => RelayVerdict::Reject(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::{
        Amount, ScriptBuf,
        secp256k1::{Keypair, SECP256K1, SecretKey},
    };

    use super::*;
    use crate::burnchain::regtest::{COINBASE_MATURITY, RegtestChain, Wallet};

    fn wallet(n: u8) -> Wallet {
        Wallet::new(Keypair::from_secret_key(
            SECP256K1,
            &SecretKey::from_slice(&[n; 32]).unwrap(),
        ))
    }

    /// A chain where wallet 1 holds a mature coinbase, and a payment from it.
    fn funded() -> (RegtestChain, Transaction) {
        let mut chain = RegtestChain::new();
        let alice = wallet(1);
        chain.mine(&alice.script(), 1_700_000_000);
        for i in 0..COINBASE_MATURITY {
            chain.mine(&ScriptBuf::new(), 1_700_000_001 + i as u32);
        }
        let pay = bitcoin::TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: wallet(2).script(),
        };
        let tx = alice.pay(&chain, vec![pay], Amount::from_sat(500)).unwrap();
        (chain, tx)
    }

    #[test]
    fn a_valid_spend_is_forwarded_and_a_second_spend_of_its_coin_is_not() {
        let (mut chain, tx) = funded();
        let bytes = consensus::serialize(&tx);
        assert_eq!(
            judge(&bytes, &chain.pending_utxos()),
            RelayVerdict::Forward(Box::new(tx.clone()))
        );
        chain.submit(tx.clone()).unwrap();
        // The same transaction again, or another spend of its coin: first seen wins.
        assert!(matches!(
            judge(&bytes, &chain.pending_utxos()),
            RelayVerdict::Ignore(_)
        ));
    }

    #[test]
    fn forgeries_and_junk_are_blamed_and_unknown_coins_dropped() {
        let (chain, tx) = funded();
        let pending = chain.pending_utxos();
        // A signature that does not verify.
        let mut forged = tx.clone();
        forged.input[0].witness = bitcoin::Witness::from_slice(&[vec![7u8; 64]]);
        assert!(matches!(
            judge(&consensus::serialize(&forged), &pending),
            RelayVerdict::Reject(_)
        ));
        // More out than in.
        let mut inflated = tx.clone();
        inflated.output[0].value = Amount::from_btc(100.0).unwrap();
        assert!(matches!(
            judge(&consensus::serialize(&inflated), &pending),
            RelayVerdict::Reject(_)
        ));
        // A coin nobody has: dropped, not forwarded.
        let mut invented = tx.clone();
        invented.input[0].previous_output.vout = 77;
        assert!(matches!(
            judge(&consensus::serialize(&invented), &pending),
            RelayVerdict::Ignore(_)
        ));
        // Junk, trailing bytes, oversize.
        assert!(matches!(judge(b"junk", &pending), RelayVerdict::Reject(_)));
        let mut trailing = consensus::serialize(&tx);
        trailing.push(0);
        assert!(matches!(
            judge(&trailing, &pending),
            RelayVerdict::Reject(_)
        ));
        assert!(matches!(
            judge(&vec![0; MAX_RELAYED_TX_BYTES + 1], &pending),
            RelayVerdict::Reject(_)
        ));
    }
}
