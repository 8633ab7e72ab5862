//! Builds and signs blocks for tests and benchmarks (the `test-utils` feature), with
//! a producer group whose 100 FROST shares are dealt and held in one place.
//!
//! The builder applies transactions with the same code as validation, but trusting
//! its caller (no nonce, placement or tenure-change checks), so a test can build a
//! block that breaks one rule and watch validation refuse it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bitcoin::secp256k1::{Keypair, Message, SECP256K1, XOnlyPublicKey};
use frost_secp256k1_tr::{self as frost, keys::Tweak as _};
use rand_chacha::{ChaCha12Rng, rand_core::SeedableRng};
use serde_bytes::ByteBuf;

use super::{
    BLOCK_VERSION, Block, BlockSignature, ChainState, Hash, Header, SIGNING_THRESHOLD,
    SignerEvidence, TermContext, Tx,
    fees::pay_fees,
    state::Working,
    tx_root,
    validate::{Rules, block_cost},
};
use crate::tenure_change::{Cause, TenureChange, pubkey_hash};

/// A producer group's 100 FROST shares (threshold 67) from a trusted dealer, all held
/// here: real FROST signatures and signer evidence for tests and benchmarks, without
/// running a DKG among members.
pub struct ProducerGroup {
    /// Key package of each share number, taproot-tweaked.
    packages: BTreeMap<u16, frost::keys::KeyPackage>,
    /// The public key package, taproot-tweaked (what a [`TermContext`] carries).
    pub public: frost::keys::PublicKeyPackage,
}

impl ProducerGroup {
    /// The group dealt from `seed`.
    pub fn generate(seed: u64) -> Option<ProducerGroup> {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let (secrets, public) = frost::keys::generate_with_dealer(
            super::SIGNER_SHARES as u16,
            SIGNING_THRESHOLD as u16,
            frost::keys::IdentifierList::Default,
            &mut rng,
        )
        .ok()?;
        let mut packages = BTreeMap::new();
        for n in 1..=super::SIGNER_SHARES as u16 {
            let id = frost::Identifier::try_from(n).ok()?;
            let package = frost::keys::KeyPackage::try_from(secrets.get(&id)?.clone()).ok()?;
            packages.insert(n, package.tweak::<&[u8]>(None));
        }
        Some(ProducerGroup {
            packages,
            public: public.tweak::<&[u8]>(None),
        })
    }

    /// One group for a whole test binary (dealing and tweaking 100 shares once).
    #[allow(clippy::expect_used)] // Test builder: dealing from a fixed seed cannot fail.
    pub fn shared() -> &'static ProducerGroup {
        static GROUP: OnceLock<ProducerGroup> = OnceLock::new();
        GROUP.get_or_init(|| ProducerGroup::generate(1).expect("dealing the test group"))
    }

    /// The group's taproot output key: what its signatures verify under.
    #[allow(clippy::expect_used)] // Test builder: a dealt group's key is a valid point.
    pub fn key(&self) -> XOnlyPublicKey {
        let bytes = self
            .public
            .verifying_key()
            .serialize()
            .expect("the group key serializes");
        XOnlyPublicKey::from_slice(bytes.get(1..33).expect("a 33-byte key")).expect("an x-only key")
    }

    /// Signs `message` with the shares numbered `shares`: the BIP340 signature and its
    /// evidence. `None` if FROST refuses (fewer than 67 shares, an unknown number).
    pub fn sign(
        &self,
        message: Hash,
        shares: &BTreeSet<u16>,
    ) -> Option<([u8; 64], SignerEvidence)> {
        // Fresh nonces for every signing, deterministic for a test run.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut rng = ChaCha12Rng::seed_from_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for n in shares {
            let package = self.packages.get(n)?;
            let (nonce, commitment) = frost::round1::commit(package.signing_share(), &mut rng);
            nonces.insert(*n, nonce);
            commitments.insert(*package.identifier(), commitment);
        }
        let signing = frost::SigningPackage::new(commitments, &message);
        let mut signature_shares = BTreeMap::new();
        let mut evidence = Vec::new();
        for n in shares {
            let package = self.packages.get(n)?;
            let share = frost::round2::sign(&signing, nonces.get(n)?, package).ok()?;
            evidence.push((*n, ByteBuf::from(share.serialize())));
            signature_shares.insert(*package.identifier(), share);
        }
        let signature = frost::aggregate(&signing, &signature_shares, &self.public).ok()?;
        let bytes: [u8; 64] = signature.serialize().ok()?.try_into().ok()?;
        Some((
            bytes,
            SignerEvidence {
                package: ByteBuf::from(signing.serialize().ok()?),
                shares: evidence,
            },
        ))
    }
}

/// The first 67 share numbers: the builders' default signer set.
pub fn threshold_shares() -> BTreeSet<u16> {
    (1..=SIGNING_THRESHOLD as u16).collect()
}

/// A block of `term` on `state` with `txs`, signed by `group`'s first 67 shares (and
/// by `stacker`, if given), its fees paid as `context` says. Returns the block and
/// the state after it. The transactions are applied without checks (so tests can
/// build invalid blocks): validation is what checks them.
pub fn block(
    state: &ChainState,
    context: &TermContext,
    term: u64,
    txs: Vec<Tx>,
    group: &ProducerGroup,
    stacker: Option<&Keypair>,
) -> Option<(Block, ChainState)> {
    block_signed_by(
        state,
        context,
        term,
        txs,
        group,
        &threshold_shares(),
        stacker,
    )
}

/// [`block`], signed by the shares numbered `shares`.
pub fn block_signed_by(
    state: &ChainState,
    context: &TermContext,
    term: u64,
    txs: Vec<Tx>,
    group: &ProducerGroup,
    shares: &BTreeSet<u16>,
    stacker: Option<&Keypair>,
) -> Option<(Block, ChainState)> {
    let opening = state.opening(term, &txs);
    let mut header = Header {
        parent: state.tip,
        term,
        height: state.height.checked_add(1)?,
        tx_root: tx_root(&txs),
        state_root: [0; 32],
        time: 0,
    };
    let unsigned = Block {
        version: BLOCK_VERSION,
        header: header.clone(),
        txs,
        producer_signature: ByteBuf::new(),
        signers: SignerEvidence::default(),
        stacker_signature: None,
        parent_signature: state.parent_signature_for(context),
    };
    let mut working = Working::over(state);
    state
        .apply_txs(&mut working, &unsigned, context, "", opening, Rules::Trust)
        .ok()?;
    let paid = state
        .paid_signers(unsigned.parent_signature.as_ref(), context)
        .ok()?;
    pay_fees(
        &mut working,
        context,
        &unsigned.txs,
        opening.first_of_term,
        &paid,
    )
    .ok()?;
    header.state_root = working.state_root();
    let message = Block::signing_message(&header);
    let (signature, evidence) = group.sign(message, shares)?;
    working.signature = Some(BlockSignature {
        signature: ByteBuf::from(signature.to_vec()),
        signers: evidence.clone(),
    });
    let changes = state.changeset(working, &header, opening, block_cost(&unsigned.txs));
    let stacker_signature = stacker.map(|k| {
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(message), k);
        ByteBuf::from(sig.as_ref().to_vec())
    });
    let block = Block {
        version: BLOCK_VERSION,
        producer_signature: ByteBuf::from(signature.to_vec()),
        signers: evidence,
        stacker_signature,
        header,
        txs: unsigned.txs,
        parent_signature: unsigned.parent_signature,
    };
    let mut next = state.clone();
    next.apply(&changes);
    Some((block, next))
}

/// A tenure change of `cause` for a block of `context`'s term on `state`, signed by
/// `stacker` where a stacker set is configured, else by `group`'s first 67 shares,
/// with every producer share marked.
pub fn tenure_change(
    state: &ChainState,
    context: &TermContext,
    cause: Cause,
    group: &ProducerGroup,
    stacker: Option<&Keypair>,
    network: &str,
) -> Option<TenureChange> {
    let mut tc = TenureChange {
        tenure_consensus_hash: context.consensus_hash,
        previous_tenure_consensus_hash: match cause {
            Cause::BlockFound => context.previous_consensus_hash,
            Cause::Extend => context.consensus_hash,
        },
        burn_view_consensus_hash: context.consensus_hash,
        previous_tenure_end: state.tip,
        previous_tenure_blocks: u32::try_from(state.term_blocks).unwrap_or(u32::MAX),
        cause,
        pubkey_hash: pubkey_hash(&context.producer_key),
        signature: [0; 65],
        signers: vec![true; super::SIGNER_SHARES],
    };
    match stacker {
        Some(k) => tc.sign(network, k),
        None => {
            let (signature, _) = group.sign(tc.digest(network), &threshold_shares())?;
            tc.set_signature(signature);
        }
    }
    Some(tc)
}

/// The first block of `context`'s term on `state`: its coinbase, its
/// `BlockFound` (granted by `stacker`, else by `group`), then `txs`.
pub fn term_start(
    state: &ChainState,
    context: &TermContext,
    txs: Vec<Tx>,
    group: &ProducerGroup,
    stacker: Option<&Keypair>,
    network: &str,
) -> Option<(Block, ChainState)> {
    let found = tenure_change(state, context, Cause::BlockFound, group, stacker, network)?;
    let mut all = vec![
        Tx::Coinbase {
            term: context.term,
            payouts: context.coinbase.clone(),
        },
        Tx::TenureChange(found),
    ];
    all.extend(txs);
    block(state, context, context.term, all, group, stacker)
}
