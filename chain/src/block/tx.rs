//! Transactions: transfers between accounts, the term's coinbase, tenure changes.

use bitcoin::{
    XOnlyPublicKey,
    secp256k1::{Message, SECP256K1, schnorr},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use super::{AccountId, BLOCK_VERSION, BlockError, Hash};
use crate::{
    codec::{self, Versioned},
    tenure_change::TenureChange,
};

/// Largest encoded transaction accepted on its own.
pub const MAX_TX_BYTES: usize = 64 * 1024;

/// A transfer between accounts, signed (BIP340) by the sender's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Sender (x-only key).
    pub from: AccountId,
    /// Recipient.
    pub to: AccountId,
    /// Amount moved.
    pub amount: u64,
    /// Fee paid to the producers.
    pub fee: u64,
    /// The sender's nonce (its count of transactions so far).
    pub nonce: u64,
    /// BIP340 signature over [`Transfer::digest`].
    pub signature: ByteBuf,
}

impl Transfer {
    /// What the sender signs.
    pub fn digest(&self, network: &str) -> Hash {
        let mut h = Sha256::new();
        h.update(b"tenure/chain/transfer/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(self.from);
        h.update(self.to);
        h.update(self.amount.to_be_bytes());
        h.update(self.fee.to_be_bytes());
        h.update(self.nonce.to_be_bytes());
        h.finalize().into()
    }

    /// Signs a transfer with the sender's key pair.
    pub fn sign(
        network: &str,
        from: &bitcoin::secp256k1::Keypair,
        to: AccountId,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Transfer {
        let mut t = Transfer {
            from: AccountId::of(&from.x_only_public_key().0),
            to,
            amount,
            fee,
            nonce,
            signature: ByteBuf::new(),
        };
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(t.digest(network)), from);
        t.signature = ByteBuf::from(sig.as_ref().to_vec());
        t
    }

    /// Whether the sender's signature verifies.
    pub fn signature_valid(&self, network: &str) -> bool {
        let (Ok(key), Ok(sig)) = (
            XOnlyPublicKey::from_slice(&self.from.0),
            schnorr::Signature::from_slice(&self.signature),
        ) else {
            return false;
        };
        SECP256K1
            .verify_schnorr(&sig, &Message::from_digest(self.digest(network)), &key)
            .is_ok()
    }
}

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tx {
    /// The term's coinbase: new coins to the term's producers.
    Coinbase {
        /// The term.
        term: u64,
        /// (recipient, amount).
        payouts: Vec<(AccountId, u64)>,
    },
    /// A transfer.
    Transfer(Transfer),
    /// A tenure change: `BlockFound` in a term's first block, `Extend` to renew its
    /// budget.
    TenureChange(TenureChange),
}

/// A transaction on its own on the wire (the mempool, the HTTP API): its version,
/// then the transaction. Inside a block, the block's version covers its transactions.
#[derive(Deserialize)]
struct TxEnvelope {
    version: u16,
    tx: Tx,
}

impl Versioned for TxEnvelope {
    const VERSION: u16 = BLOCK_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl Tx {
    /// Encodes a transaction on its own, with its version ([`crate::codec`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BlockError> {
        /// The envelope as written: borrows the transaction rather than copying it.
        #[derive(Serialize)]
        struct Outgoing<'a> {
            version: u16,
            tx: &'a Tx,
        }
        Ok(codec::encode(&Outgoing {
            version: BLOCK_VERSION,
            tx: self,
        })?)
    }

    /// Decodes a transaction of at most [`MAX_TX_BYTES`] and of this build's version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tx, BlockError> {
        let envelope: TxEnvelope = codec::decode(bytes, MAX_TX_BYTES)?;
        Ok(envelope.tx)
    }

    /// The transaction's id: a double SHA-256 of its canonical fields, each of fixed
    /// width or length-prefixed, so no two transactions share one and no encoder can
    /// fail on the way.
    pub fn id(&self) -> Hash {
        let mut h = Sha256::new();
        match self {
            Tx::Coinbase { term, payouts } => {
                h.update(b"tenure/chain/tx/coinbase/v1");
                h.update(term.to_be_bytes());
                h.update((payouts.len() as u64).to_be_bytes());
                for (to, amount) in payouts {
                    h.update(to);
                    h.update(amount.to_be_bytes());
                }
            }
            Tx::Transfer(t) => {
                h.update(b"tenure/chain/tx/transfer/v1");
                h.update(t.from);
                h.update(t.to);
                h.update(t.amount.to_be_bytes());
                h.update(t.fee.to_be_bytes());
                h.update(t.nonce.to_be_bytes());
                h.update((t.signature.len() as u64).to_be_bytes());
                h.update(&t.signature);
            }
            Tx::TenureChange(tc) => {
                h.update(b"tenure/chain/tx/tenure-change/v1");
                h.update(tc.to_bytes());
            }
        }
        Sha256::digest(h.finalize()).into()
    }

    /// The fee it pays: a transfer's fee, nothing for the others.
    pub fn fee(&self) -> u64 {
        match self {
            Tx::Transfer(t) => t.fee,
            Tx::Coinbase { .. } | Tx::TenureChange(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_transaction_round_trips_with_its_version_and_another_version_is_refused() {
        let tx = Tx::Coinbase {
            term: 3,
            payouts: vec![(AccountId([7; 32]), 50)],
        };
        let bytes = tx.to_bytes().unwrap();
        assert_eq!(Tx::from_bytes(&bytes).unwrap(), tx);
        let other = serde_cbor::to_vec(&serde_cbor::Value::Map(
            [
                (
                    serde_cbor::Value::Text("version".into()),
                    serde_cbor::Value::Integer(9),
                ),
                (
                    serde_cbor::Value::Text("tx".into()),
                    serde_cbor::value::to_value(&tx).unwrap(),
                ),
            ]
            .into_iter()
            .collect(),
        ))
        .unwrap();
        assert_eq!(
            Tx::from_bytes(&other),
            Err(BlockError::UnsupportedVersion {
                found: 9,
                supported: BLOCK_VERSION
            })
        );
    }
}
