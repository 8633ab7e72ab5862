//! Producer-set enrollments: the SIP's 80-byte `OP_RETURN` and the PoX or burn
//! outputs after it.
//!
//! ```text
//!   0      2  3     7     9    13    15           48            80
//!   |------|--|-----|-----|-----|-----|------------|-------------|
//!    magic  op set   set   key   key     signing      state root
//!              block txoff block txoff   pubkey          hash
//! ```
//!
//! Heights are 4-byte and offsets 2-byte big-endian integers. A malformed enrollment
//! is ignored with its reason ([`EnrollmentError`]), never a panic: anyone can put
//! bytes on Bitcoin.
//!
//! What an enrollment spends is what ranks it, so the spend must leave the producer
//! ([`Payment`]): during a reward cycle outputs 1–20 pay the cycle's PoX recipients,
//! in the cycle's order, in equal amounts, and a provably unspendable burn may stand
//! in for any of them (it must for each recipient the cycle does not have); outside a reward cycle the second
//! output burns. An output paying anyone else (the producer itself, say) makes the
//! enrollment invalid: otherwise selection weight would be free.
//!
//! The enrollment is tied to its term ([`check_term`], SIP: "only accepted if it is
//! processed during the correct term"): an enrollment mined in term E (choosing the
//! producers of term E + 2) names in `set_block` a burn block of term E − 1 (the
//! SIP's N-3), before the enrollment itself. `state_root` is the chain state root as
//! of the block announced at (`set_block`, `set_txoff`); the scan compares it with
//! that announced block's state root, which only the announcement index holds.

use bitcoin::{Amount, ScriptBuf, Transaction, TxOut, script::PushBytesBuf, secp256k1::PublicKey};

/// The enrollment operation byte.
pub const OP_ENROLL: u8 = b'@';

/// Bytes of the enrollment data.
pub const ENROLLMENT_BYTES: usize = 80;

/// PoX outputs of an enrollment made during a reward cycle.
pub const POX_OUTPUTS: usize = 20;

/// Which network's magic an enrollment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// Mainnet (`X2`).
    Mainnet,
    /// Testnet (`T2`).
    Testnet,
    /// Regtest, the embedded burnchain (`id`).
    Regtest,
}

impl Magic {
    /// The two magic bytes.
    pub fn bytes(self) -> [u8; 2] {
        match self {
            Magic::Mainnet => *b"X2",
            Magic::Testnet => *b"T2",
            Magic::Regtest => *b"id",
        }
    }
}

/// The data of an enrollment's `OP_RETURN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentData {
    /// Burn height of the final block announced in term N-3.
    pub set_block: u32,
    /// Its offset in that burn block.
    pub set_txoff: u16,
    /// Burn height of the producer's key registration.
    pub key_block: u32,
    /// Its offset.
    pub key_txoff: u16,
    /// The producer's signing key (compressed secp256k1).
    pub signing_pubkey: PublicKey,
    /// The chain state root as of (`set_block`, `set_txoff`).
    pub state_root: [u8; 32],
}

/// Why a transaction is not a valid enrollment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    /// No outputs, or the first is not an `OP_RETURN` with one push.
    #[error("the first output is not an OP_RETURN with one data push")]
    NoOpReturn,
    /// The data is not 80 bytes.
    #[error("enrollment data is {0} bytes, not 80")]
    Length(usize),
    /// Another network's magic.
    #[error("magic {0:02x?} is not this network's")]
    Magic([u8; 2]),
    /// Not the enrollment operation.
    #[error("operation {0:#04x} is not an enrollment")]
    Op(u8),
    /// The signing key is not a valid compressed public key.
    #[error("the signing key is not a compressed secp256k1 point")]
    SigningKey,
    /// No PoX or burn outputs after the `OP_RETURN`.
    #[error("no PoX or burn output follows the OP_RETURN")]
    NoSpend,
    /// The PoX outputs do not all carry the same amount.
    #[error("PoX outputs carry different amounts ({0} and {1} sats)")]
    UnequalPox(u64, u64),
    /// Outside a reward cycle the second output must burn.
    #[error("outside a reward cycle the second output must be a burn")]
    NotBurn,
    /// PoX outputs whose total is past the money range (21 million BTC).
    #[error("PoX outputs of {0} sats each add up past the money range")]
    OutOfRange(u64),
    /// A burn past the money range (no valid Bitcoin transaction has one; the parser
    /// does not rely on its caller having checked).
    #[error("a burn of {0} sats is past the money range")]
    BurnOutOfRange(u64),
    /// A PoX output pays someone who is not the cycle's recipient at that place.
    #[error("PoX output {0} pays someone other than the cycle's recipient")]
    WrongRecipient(usize),
    /// `set_block` is not a burn block of the term before the enrollment's.
    #[error(
        "set block {set_block} is not in the term before the enrollment's (mined at {mined_at})"
    )]
    WrongTerm {
        /// The enrollment's set block.
        set_block: u32,
        /// Where the enrollment was mined.
        mined_at: u64,
    },
}

/// How an enrollment must pay, as the burnchain's reward cycle says.
#[derive(Clone, Copy, Debug)]
pub enum Payment<'a> {
    /// Outside a reward cycle: the second output burns.
    Burn,
    /// During a reward cycle: outputs 1–20 pay these recipients in order (burns for
    /// the places past the end of the list), in equal amounts.
    Pox(&'a [ScriptBuf]),
}

/// Checks that an enrollment mined at burn height `mined_at` names in `set_block` a
/// burn block of the term before its own, and not after itself.
pub fn check_term(
    data: &EnrollmentData,
    terms: &crate::terms::Terms,
    mined_at: u64,
) -> Result<(), EnrollmentError> {
    let set = u64::from(data.set_block);
    let wrong = EnrollmentError::WrongTerm {
        set_block: data.set_block,
        mined_at,
    };
    let term = terms.term_of(mined_at).ok_or(wrong.clone())?;
    let previous = term.checked_sub(1).ok_or(wrong.clone())?;
    if set >= mined_at || terms.term_of(set) != Some(previous) {
        return Err(wrong);
    }
    Ok(())
}

/// A parsed enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    /// The `OP_RETURN` data.
    pub data: EnrollmentData,
    /// BTC spent on PoX recipients and burns: what ranks the producer.
    pub spent: Amount,
}

impl EnrollmentData {
    /// The 80 bytes.
    pub fn to_bytes(&self, magic: Magic) -> [u8; ENROLLMENT_BYTES] {
        let mut out = [0u8; ENROLLMENT_BYTES];
        let fields: [&[u8]; 8] = [
            &magic.bytes(),
            &[OP_ENROLL],
            &self.set_block.to_be_bytes(),
            &self.set_txoff.to_be_bytes(),
            &self.key_block.to_be_bytes(),
            &self.key_txoff.to_be_bytes(),
            &self.signing_pubkey.serialize(),
            &self.state_root,
        ];
        let mut at: usize = 0;
        for field in fields {
            let end = at.saturating_add(field.len());
            if let Some(slot) = out.get_mut(at..end) {
                slot.copy_from_slice(field);
            }
            at = end;
        }
        out
    }

    /// Parses the 80 bytes.
    pub fn from_bytes(bytes: &[u8], magic: Magic) -> Result<EnrollmentData, EnrollmentError> {
        let bytes: &[u8; ENROLLMENT_BYTES] = bytes
            .try_into()
            .map_err(|_| EnrollmentError::Length(bytes.len()))?;
        let (found, rest) = bytes.split_at(2);
        if found != magic.bytes() {
            return Err(EnrollmentError::Magic(found.try_into().unwrap_or_default()));
        }
        let (op, rest) = rest.split_at(1);
        if op != [OP_ENROLL] {
            return Err(EnrollmentError::Op(op.first().copied().unwrap_or_default()));
        }
        // The slices below have the lengths the layout gives them.
        let u32_at = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap_or_default());
        let u16_at = |b: &[u8]| u16::from_be_bytes(b.try_into().unwrap_or_default());
        let (set_block, rest) = rest.split_at(4);
        let (set_txoff, rest) = rest.split_at(2);
        let (key_block, rest) = rest.split_at(4);
        let (key_txoff, rest) = rest.split_at(2);
        let (pubkey, root) = rest.split_at(33);
        let mut state_root = [0u8; 32];
        state_root.copy_from_slice(root);
        Ok(EnrollmentData {
            set_block: u32_at(set_block),
            set_txoff: u16_at(set_txoff),
            key_block: u32_at(key_block),
            key_txoff: u16_at(key_txoff),
            signing_pubkey: PublicKey::from_slice(pubkey)
                .map_err(|_| EnrollmentError::SigningKey)?,
            state_root,
        })
    }

    /// The `OP_RETURN` output carrying this enrollment.
    pub fn op_return(&self, magic: Magic) -> TxOut {
        let push = PushBytesBuf::try_from(self.to_bytes(magic).to_vec()).unwrap_or_default();
        TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(push),
        }
    }
}

/// A burn output: provably unspendable.
pub fn burn_output(amount: Amount) -> TxOut {
    TxOut {
        value: amount,
        script_pubkey: ScriptBuf::new_op_return([]),
    }
}

fn is_burn(out: &TxOut) -> bool {
    out.script_pubkey.is_op_return()
}

/// Parses `tx` as an enrollment that must pay as `payment` says.
pub fn parse(
    tx: &Transaction,
    magic: Magic,
    payment: Payment<'_>,
) -> Result<Enrollment, EnrollmentError> {
    let data = crate::ops::op_return::first_output_push(tx).ok_or(EnrollmentError::NoOpReturn)?;
    let data = EnrollmentData::from_bytes(data, magic)?;
    let spent = if let Payment::Pox(recipients) = payment {
        let pox: Vec<&TxOut> = tx.output.iter().skip(1).take(POX_OUTPUTS).collect();
        if pox.len() < POX_OUTPUTS {
            return Err(EnrollmentError::NoSpend);
        }
        let amount = pox.first().map(|o| o.value).unwrap_or(Amount::ZERO);
        if let Some(other) = pox.iter().find(|o| o.value != amount) {
            return Err(EnrollmentError::UnequalPox(
                amount.to_sat(),
                other.value.to_sat(),
            ));
        }
        for (i, out) in pox.iter().enumerate() {
            // A burn is always allowed: it spends as much and pays no one.
            let paid = is_burn(out) || recipients.get(i) == Some(&out.script_pubkey);
            if !paid {
                return Err(EnrollmentError::WrongRecipient(i.saturating_add(1)));
            }
        }
        amount
            .checked_mul(POX_OUTPUTS as u64)
            .filter(|total| *total <= Amount::MAX_MONEY)
            .ok_or(EnrollmentError::OutOfRange(amount.to_sat()))?
    } else {
        let second = tx.output.get(1).ok_or(EnrollmentError::NoSpend)?;
        if !is_burn(second) {
            return Err(EnrollmentError::NotBurn);
        }
        if second.value > Amount::MAX_MONEY {
            return Err(EnrollmentError::BurnOutOfRange(second.value.to_sat()));
        }
        second.value
    };
    Ok(Enrollment { data, spent })
}
