//! One producer's side of block production within a term (seed 001 "Producer Set
//! Collaboration", "Producer Signing Protocol"; DESIGN "Block production"), sans-IO:
//! fed with messages, signatures and time, returning messages to send, signing
//! requests for the federation, and the blocks it applied.
//!
//! The rules:
//!
//! 1. **A leader**, elected by [`super::election`], proposes. On the term's first block
//!    it first has the group sign the term's `BlockFound` tenure change (every producer's
//!    validator approves exactly the one it would build on its own tip), then proposes
//!    the coinbase, the tenure change and transfers from its mempool, by fee
//!    ([`ChainState::assemble`]). It proposes every [`ProducerConfig::block_interval`],
//!    empty blocks included: a proposal is also the sign that the leader is alive.
//! 2. **Producers check, then pre-commit.** A producer checks a proposal against its
//!    own chain state ([`ChainState::check_proposal`]), and pre-commits to its header:
//!    its federation member may now sign it. It pre-commits to one header per height
//!    and round; only what it pre-committed is approved for signing ([`Approvals`]). A proposal that fails the check deposes the leader for
//!    misbehaviour. A leader whose proposal was not signed in time proposes again at
//!    that height with a higher sequence number (the header's `time` field, for now);
//!    the new proposal replaces the old one, whose approval is withdrawn. Two different
//!    proposals under one (round, height, sequence) are equivocation and depose the
//!    leader too.
//! 3. **The group signs what was pre-committed.** The leader asks the federation to
//!    sign the header ([`SignPayload`]) as it proposes it: the request and the
//!    proposal travel together, and a member whose producer has not pre-committed yet
//!    refuses until it has (signing puts a refused request to the validator again for
//!    a while). Each member's validator approves only a header its producer
//!    pre-committed, so the FROST round signs only the block checked by the signers,
//!    and a signature is itself the proof that producers holding 67 shares checked it.
//!    The two phases of the SIP's commit are the FROST round's own: a member sends
//!    its nonce commitments only once its producer pre-committed (its vote), and its
//!    signature share once commitments of 67 shares are in.
//!    (Until this version producers also sent the leader a signed pre-commit, and the
//!    leader asked for signatures once those reached 67% of the weight: one round trip
//!    more per block, 1.18 s against 0.88 s p50 in the 100-producer simulation, and n
//!    messages and signature checks per block, for a quorum the signature proves.) Any producer that learns the
//!    signature and holds the proposal completes the block and publishes it: a leader
//!    that crashes after signing does not lose the block.
//! 4. **Blocks are validated before they are applied** ([`ChainState::validate`],
//!    signer evidence included), the mempool is pruned, and a producer that is behind
//!    asks the sender for the blocks it lacks. A producer answers such a request from
//!    the last blocks it keeps in memory; for older ones it has its node's chain store
//!    answer ([`ProducerOutput::ServeBlocks`]), so a node that was away long, or
//!    restarted, catches up from any producer.
//! 5. **Liveness.** A follower that sees no proposal or block from its leader for
//!    [`ProducerConfig::leader_timeout_for`] the term's producers (twice that for a term's first block, which
//!    takes two signatures) deposes it for silence, and so does one that
//!    has not heard it for half that long when another producer asks for votes in a
//!    later round (producers depose at slightly different times; without this, the
//!    first to stand finds the others still following and its round fails). A pre-commit is released
//!    when its leader is deposed, so the next leader's proposal at that height can be
//!    pre-committed. (A deposed leader that had its block signed and withheld it could
//!    make two blocks at one height; announcements on the burnchain decide which is
//!    final.)

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bitcoin::secp256k1::Keypair;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use bitcoin::{OutPoint, ScriptBuf, Transaction, TxOut, consensus};

use super::{
    announce::{self, AnnouncementRefusal},
    election::{
        Deposed, Election, ElectionConfig, ElectionMessage, ElectionOutput, ElectionRefusal,
        ProducerId,
    },
    mempool::{Admitted, Mempool, MempoolRefusal},
};
use crate::{
    block::{
        Block, BlockError, ChainState, CheckedProposal, Hash, Header, SIGNER_SHARES,
        SignerEvidence, TermContext, Transfer, Tx,
    },
    codec::{self, Versioned},
    ops::{announce::Announcement, enrollment::Magic},
    tenure_change::{Cause, TenureChange, pubkey_hash},
};

/// Wire version of producer messages.
pub const PRODUCER_MESSAGE_VERSION: u16 = 2;

/// Largest producer message accepted (a block, with room for its envelope).
pub const MAX_PRODUCER_MESSAGE_BYTES: usize = crate::block::MAX_BLOCK_BYTES + 64 * 1024;

/// Messages of the next term kept until it begins.
const EARLY_KEPT: usize = 256;

/// Blocks kept to serve producers that fell behind.
const RECENT_BLOCKS: usize = 64;

/// Transfer ids remembered as checked by the mempool.
const VERIFIED_KEPT: usize = 200_000;

/// Blocks sent in one catch-up answer.
const CATCH_UP_BATCH: usize = 16;

/// Timing and sizes of block production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerConfig {
    /// How often the leader proposes.
    pub block_interval: Duration,
    /// A leader silent this long is deposed; a proposal unsigned this long is dropped
    /// (for a term of up to ten producers; see `leader_timeout_per_producer`).
    pub leader_timeout: Duration,
    /// Added to `leader_timeout` for each producer of the current term past ten: a
    /// block's signature gathers shares from every producer, and on one machine every
    /// producer's validation shares its cores. Worked out from each term's producers,
    /// so a term larger than the one before gets its longer timeout.
    pub leader_timeout_per_producer: Duration,
    /// Transfers in one block at most.
    pub max_block_transfers: usize,
    /// Transfers the mempool holds at most.
    pub mempool_capacity: usize,
    /// The election's timing.
    pub election: ElectionConfig,
    /// The magic of the burnchain announcements are made on.
    pub magic: Magic,
}

impl ProducerConfig {
    /// The leader timeout in a term of `producers` producers.
    pub fn leader_timeout_for(&self, producers: usize) -> Duration {
        let extra = u32::try_from(producers.saturating_sub(10)).unwrap_or(u32::MAX);
        self.leader_timeout
            .saturating_add(self.leader_timeout_per_producer.saturating_mul(extra))
    }
}

/// The default time added to the leader timeout for each producer past ten.
pub const LEADER_TIMEOUT_PER_PRODUCER: Duration = Duration::from_millis(180);

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            block_interval: Duration::from_millis(250),
            leader_timeout: Duration::from_millis(1_200),
            leader_timeout_per_producer: LEADER_TIMEOUT_PER_PRODUCER,
            max_block_transfers: 2_000,
            mempool_capacity: 20_000,
            election: ElectionConfig::default(),
            magic: Magic::Regtest,
        }
    }
}

/// What producers send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProducerBody {
    /// The leader election.
    Election(ElectionMessage),
    /// The leader's proposal: an unsigned block, with the certificate that makes its
    /// sender the leader (so a producer that missed the election learns it here).
    Proposal {
        /// The round the leader won.
        round: u64,
        /// The block, unsigned.
        block: Block,
        /// The leader's certificate.
        certificate: ElectionMessage,
    },
    /// A signed block.
    Block(Block),
    /// Blocks from this height on, please.
    GetBlocks {
        /// The first height wanted.
        from: u64,
    },
    /// The proofs of the term keys from this term on, please (a node that restarted
    /// or joined late, missing the certificates gossiped before): answered by the
    /// node with a `follower::BlockBatch` holding proofs and no block.
    GetTermKeys {
        /// The first term wanted.
        from: u64,
    },
}

/// A producer message, versioned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerMessage {
    /// Wire version ([`PRODUCER_MESSAGE_VERSION`]).
    pub version: u16,
    /// The term it belongs to.
    pub term: u64,
    /// What it says.
    pub body: ProducerBody,
}

impl Versioned for ProducerMessage {
    const VERSION: u16 = PRODUCER_MESSAGE_VERSION;
    fn version(&self) -> u16 {
        self.version
    }
}

impl ProducerMessage {
    /// Encodes the message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(self)
    }

    /// Decodes a message of at most [`MAX_PRODUCER_MESSAGE_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ProducerMessage, codec::CodecError> {
        codec::decode(bytes, MAX_PRODUCER_MESSAGE_BYTES)
    }
}

/// What the leader asks the federation to sign: the payload every member's validator
/// judges ([`Approvals::approve`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignPayload {
    /// A block header (the group signs [`Block::signing_message`]).
    Header(Header),
    /// The term's opening tenure change (the group signs its digest).
    TenureChange(TenureChange),
    /// An announcement spending the term UTXO (the group signs its key-path sighash;
    /// [`announce`]): the transaction and the output it spends, consensus-encoded.
    Announcement {
        /// The unsigned transaction.
        tx: ByteBuf,
        /// The term UTXO it spends.
        prevout: ByteBuf,
    },
}

impl SignPayload {
    /// Encodes the payload.
    pub fn to_bytes(&self) -> Result<Vec<u8>, codec::CodecError> {
        serde_cbor::to_vec(self).map_err(|e| codec::CodecError::Encode(e.to_string()))
    }

    /// Decodes a payload (bounded like a block header or tenure change).
    pub fn from_bytes(bytes: &[u8]) -> Option<SignPayload> {
        if bytes.len() > 64 * 1024 {
            return None;
        }
        serde_cbor::from_slice(bytes).ok()
    }

    /// The digest the group signs for it (`None`: an announcement that does not
    /// decode).
    pub fn digest(&self, network: &str) -> Option<Hash> {
        match self {
            SignPayload::Header(header) => Some(Block::signing_message(header)),
            SignPayload::TenureChange(tc) => Some(tc.digest(network)),
            SignPayload::Announcement { tx, prevout } => {
                let (tx, prevout) = announce::decode(tx, prevout).ok()?;
                announce::sighash(&tx, &prevout)
            }
        }
    }
}

/// The digests this producer lets its federation member sign: the headers it
/// pre-committed and the tenure change it would build itself. Shared with the
/// federation member's validator.
///
/// Announcements are checked by their rules instead ([`announce::check`]), against
/// the producer's term and the blocks it holds, which the producer records here.
#[derive(Clone, Debug, Default)]
pub struct Approvals {
    digests: Arc<Mutex<VecDeque<Hash>>>,
    announcing: Arc<Mutex<AnnouncingView>>,
}

/// What a member checks announcements against.
#[derive(Debug, Default)]
struct AnnouncingView {
    /// The term, its UTXO's script, the burnchain's magic.
    term: Option<(u64, ScriptBuf, Magic)>,
    /// Blocks this producer applied lately, by height.
    held: BTreeMap<u64, Hash>,
}

/// Why a signing payload is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefusal {
    /// Not a payload.
    #[error("not a signing payload")]
    Undecodable,
    /// Not something this producer pre-committed or would build.
    #[error("not pre-committed by this producer")]
    NotPreCommitted,
    /// An announcement this producer does not approve.
    #[error("announcement: {0}")]
    Announcement(#[from] AnnouncementRefusal),
}

impl Approvals {
    /// Digests remembered at most.
    const KEPT: usize = 256;

    fn allow(&self, digest: Hash) {
        if let Ok(mut digests) = self.digests.lock() {
            if !digests.contains(&digest) {
                digests.push_back(digest);
            }
            while digests.len() > Self::KEPT {
                digests.pop_front();
            }
        }
    }

    fn revoke(&self, digest: &Hash) {
        if let Ok(mut digests) = self.digests.lock() {
            digests.retain(|d| d != digest);
        }
    }

    /// Blocks held for announcements, at most.
    const HELD: usize = 1_024;

    /// Announcements from now on are for `term`, whose UTXO pays `script`.
    fn set_term(&self, term: u64, script: ScriptBuf, magic: Magic) {
        if let Ok(mut view) = self.announcing.lock() {
            view.term = Some((term, script, magic));
        }
    }

    /// This producer holds block `hash` at `height`.
    fn hold(&self, height: u64, hash: Hash) {
        if let Ok(mut view) = self.announcing.lock() {
            view.held.insert(height, hash);
            while view.held.len() > Self::HELD {
                view.held.pop_first();
            }
        }
    }

    /// The digest to sign for `payload`, if this producer approves it.
    pub fn approve(&self, payload: &[u8], network: &str) -> Result<Hash, ApprovalRefusal> {
        let payload = SignPayload::from_bytes(payload).ok_or(ApprovalRefusal::Undecodable)?;
        if let SignPayload::Announcement { tx, prevout } = &payload {
            let (tx, prevout) = announce::decode(tx, prevout)?;
            let view = self
                .announcing
                .lock()
                .map_err(|_| AnnouncementRefusal::NoTerm)?;
            let (term, script, magic) = view.term.as_ref().ok_or(AnnouncementRefusal::NoTerm)?;
            let digest = announce::check(&tx, &prevout, *term, script, *magic, |height, hash| {
                view.held.get(&height) == Some(hash)
            })?;
            return Ok(digest);
        }
        let digest = payload
            .digest(network)
            .ok_or(ApprovalRefusal::Undecodable)?;
        let approved = self
            .digests
            .lock()
            .map(|d| d.contains(&digest))
            .unwrap_or(false);
        if approved {
            Ok(digest)
        } else {
            Err(ApprovalRefusal::NotPreCommitted)
        }
    }
}

/// What the producer asks its driver to do, or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProducerOutput {
    /// Send to every other producer.
    Broadcast(ProducerMessage),
    /// Send to one producer.
    Send {
        /// The receiver.
        to: ProducerId,
        /// The message.
        msg: ProducerMessage,
    },
    /// Ask the federation to sign this payload ([`SignPayload`], encoded).
    Sign {
        /// The payload.
        payload: Vec<u8>,
    },
    /// A block was validated and applied: persist it (on a node with a chain store).
    Applied(Box<Block>),
    /// A producer asked for blocks older than the ones this producer keeps in memory:
    /// send it, from the node's chain store, up to `count` blocks of the best chain from
    /// height `from` on, each as a [`ProducerBody::Block`] message of term `term`.
    ServeBlocks {
        /// The producer asking.
        to: ProducerId,
        /// The first height wanted.
        from: u64,
        /// At most this many.
        count: usize,
        /// The term to put on the messages.
        term: u64,
    },
    /// An announcement the group signed: submit it to the burnchain.
    Announce(Box<Transaction>),
    /// A leader became known.
    Leader {
        /// The round it won.
        round: u64,
        /// The leader.
        leader: ProducerId,
    },
    /// The leader was deposed: for silence, or for misbehaviour (an invalid proposal,
    /// or two proposals for one height in one round) which the driver may penalise.
    Deposed {
        /// The leader.
        leader: ProducerId,
        /// Why.
        why: Deposed,
    },
}

/// Why a message changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerRefusal {
    /// For another term.
    #[error("message for term {got}, this is term {expected}")]
    WrongTerm {
        /// Its term.
        got: u64,
        /// This term.
        expected: u64,
    },
    /// The election refused it.
    #[error("election: {0}")]
    Election(#[from] ElectionRefusal),
    /// A proposal from someone who is not the leader.
    #[error("{0} is not the leader")]
    NotLeader(ProducerId),
    /// A proposal or block that breaks the chain's rules.
    #[error("invalid block: {0}")]
    Block(#[from] BlockError),
    /// Stale or not for this producer now (not misbehaviour).
    #[error("not acted on: {0}")]
    NotNow(&'static str),
}

/// The leader's proposal waiting for the group's signature.
#[derive(Debug)]
struct InFlight {
    block: Block,
    signing: bool,
    started: Instant,
}

/// Terms before the current one whose contexts a producer keeps.
pub const EARLIER_TERMS_KEPT: usize = 8;

/// One producer of a term.
#[derive(Debug)]
pub struct Producer {
    network: String,
    keypair: Keypair,
    me: ProducerId,
    context: TermContext,
    /// Terms before this one, the last [`EARLIER_TERMS_KEPT`]: their late blocks are
    /// still validated and applied, so a producer that missed a block before a term
    /// with no block (a stalled term) still catches up across it.
    earlier: BTreeMap<u64, TermContext>,
    /// The announcement being signed: its digest and unsigned transaction.
    announcing: Option<(Hash, Transaction)>,
    /// Messages of the next term that came before this producer moved to it
    /// (producers learn of a burn block at slightly different times), at most
    /// [`EARLY_KEPT`]; handled when the term begins.
    early: VecDeque<(ProducerId, ProducerMessage)>,
    /// The highest block this producer announced (or asked the group to).
    announced: u64,
    state: ChainState,
    election: Election,
    mempool: Mempool,
    weights: BTreeMap<ProducerId, u64>,
    config: ProducerConfig,
    approvals: Approvals,
    /// When the leader (or a block) was last heard from.
    leader_seen: Instant,
    /// When the leader last proposed (as leader).
    last_proposal: Option<Instant>,
    /// Leader: the proposal in flight.
    in_flight: Option<InFlight>,
    /// Leader: the term's opening tenure change, once the group signed it.
    opening: Option<TenureChange>,
    /// Leader: when the opening tenure change was last sent to be signed.
    opening_requested: Option<Instant>,
    /// The proposals this producer pre-committed, by height: (round, block).
    precommitted: BTreeMap<u64, (u64, Block, CheckedProposal)>,
    /// Ids of transfers whose signatures the mempool checked (bounded): a proposal
    /// holding them is not checked for them again.
    verified: std::collections::HashSet<Hash>,
    verified_order: VecDeque<Hash>,
    /// The latest proposal seen by (round, height): its sequence and hash, to tell a
    /// replacement from equivocation.
    seen: BTreeMap<(u64, u64), (u64, Hash)>,
    /// Recent blocks, to serve producers that fell behind.
    recent: VecDeque<Block>,
    /// A proposal for a height above the next, kept until the blocks below it arrive
    /// (a leader proposes as soon as it has its own block; its followers may not have
    /// that block yet).
    waiting: Option<(ProducerId, u64, Block, ElectionMessage)>,
    /// Proposals this producer made: a re-proposal after a failed signing differs in
    /// its header's time, so the federation treats it as a new request.
    proposals: u64,
}

impl Producer {
    /// A producer of `context`'s term holding `keypair` (its enrollment signing key),
    /// on `state`; `approvals` is shared with its federation member's validator (which
    /// may exist before the term). Its election starts now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        network: &str,
        keypair: Keypair,
        context: TermContext,
        state: ChainState,
        config: ProducerConfig,
        approvals: Approvals,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Producer {
        let weights = weights_of(&context);
        let election = Election::start(
            network,
            context.term,
            keypair,
            weights.clone(),
            config.election,
            now,
            rng,
        );
        let producer = Producer {
            network: network.to_owned(),
            me: ProducerId::of(&keypair.x_only_public_key().0),
            keypair,
            mempool: Mempool::new(network, config.mempool_capacity),
            context,
            earlier: BTreeMap::new(),
            announcing: None,
            announced: 0,
            early: VecDeque::new(),
            state,
            election,
            weights,
            config,
            approvals,
            leader_seen: now,
            last_proposal: None,
            in_flight: None,
            opening: None,
            opening_requested: None,
            precommitted: BTreeMap::new(),
            verified: std::collections::HashSet::new(),
            verified_order: VecDeque::new(),
            seen: BTreeMap::new(),
            recent: VecDeque::new(),
            waiting: None,
            proposals: 0,
        };
        producer.allow_opening();
        producer.allow_announcing();
        producer
    }

    /// Announcements from now on are for this term's UTXO.
    fn allow_announcing(&self) {
        self.approvals.set_term(
            self.context.term,
            announce::term_script(&self.context.producer_key),
            self.config.magic,
        );
    }

    /// A burn block arrived; `term_utxo` is this term's UTXO as the burnchain now
    /// says (`None`: not funded, or spent away). The leader asks the group to announce
    /// its tip if it is higher than the last it announced.
    pub fn on_burn_block(&mut self, term_utxo: Option<(OutPoint, TxOut)>) -> Vec<ProducerOutput> {
        let (Some((utxo, prevout)), Some(leader)) = (term_utxo, self.election.leader()) else {
            return Vec::new();
        };
        if leader != self.me || self.state.height <= self.announced || self.state.height == 0 {
            return Vec::new();
        }
        let announcement = Announcement {
            term: self.context.term,
            height: self.state.height,
            block: self.state.tip,
        };
        let Some(tx) = announce::unsigned(&announcement, utxo, &prevout, self.config.magic) else {
            return Vec::new();
        };
        let Some(digest) = announce::sighash(&tx, &prevout) else {
            return Vec::new();
        };
        let payload = SignPayload::Announcement {
            tx: ByteBuf::from(consensus::serialize(&tx)),
            prevout: ByteBuf::from(consensus::serialize(&prevout)),
        };
        match payload.to_bytes() {
            Ok(payload) => {
                self.announced = self.state.height;
                self.announcing = Some((digest, tx));
                vec![ProducerOutput::Sign { payload }]
            }
            Err(_) => Vec::new(),
        }
    }

    /// Moves to the next term, `context`, as the burnchain starts it: a new election
    /// among the new term's producers (weighted by their shares), on the same chain
    /// state and mempool. Messages of the new term that arrived before are handled
    /// now (their outputs returned). Whatever was under way in the old term is dropped; blocks of
    /// the old term that arrive late are still applied, under the old term's context.
    /// A producer not among the new term's producers follows: it validates and applies
    /// blocks but has no vote.
    pub fn begin_term(
        &mut self,
        context: TermContext,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Vec<ProducerOutput> {
        if context.term <= self.context.term {
            return Vec::new();
        }
        self.weights = weights_of(&context);
        self.election = Election::start(
            &self.network,
            context.term,
            self.keypair,
            self.weights.clone(),
            self.config.election,
            now,
            rng,
        );
        let before = std::mem::replace(&mut self.context, context);
        self.earlier.insert(before.term, before);
        self.forget_earlier();
        self.leader_seen = now;
        self.last_proposal = None;
        self.in_flight = None;
        self.opening = None;
        self.opening_requested = None;
        self.precommitted.clear();
        self.seen.clear();
        self.waiting = None;
        self.announcing = None;
        self.allow_opening();
        self.allow_announcing();
        // What the new term's producers sent before this one moved.
        let mut out = Vec::new();
        for (from, msg) in std::mem::take(&mut self.early) {
            if msg.term == self.context.term
                && let Ok(more) = self.handle(from, msg, now, rng)
            {
                out.extend(more);
            }
        }
        out
    }

    /// Keeps the last [`EARLIER_TERMS_KEPT`] earlier terms, and every one from the
    /// tip's term on (a producer far behind needs them all to catch up).
    fn forget_earlier(&mut self) {
        while self.earlier.len() > EARLIER_TERMS_KEPT
            && self
                .earlier
                .first_key_value()
                .is_some_and(|(term, _)| *term < self.state.term)
        {
            self.earlier.pop_first();
        }
    }

    /// The context of an earlier `context.term`, learned from its key's certificates
    /// (a producer that restarted, or joined late, catches up through blocks of terms
    /// it was not in). Ignored for this term or a later one, and for a term below the
    /// tip's.
    pub fn learn_term(&mut self, context: TermContext) {
        if context.term < self.context.term && context.term >= self.state.term {
            self.earlier.entry(context.term).or_insert(context);
            self.forget_earlier();
        }
    }

    /// The term this producer is in.
    pub fn term(&self) -> u64 {
        self.context.term
    }

    /// The context of `term` if it is this producer's term or one it kept from
    /// before, else this producer's term's: what a block of `term` is validated under.
    pub fn context_for(&self, term: u64) -> &TermContext {
        self.earlier.get(&term).unwrap_or(&self.context)
    }

    /// This producer.
    pub fn me(&self) -> ProducerId {
        self.me
    }

    /// The network name this producer signs and checks under.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The chain state at this producer's tip.
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The leader, once known.
    pub fn leader(&self) -> Option<ProducerId> {
        self.election.leader()
    }

    /// This producer as it starts again after a stop or a crash: the same key, term,
    /// configuration and approvals, on `state` (its chain store's tip), with nothing of
    /// the running protocol (election, proposals, mempool) kept, only the earlier terms'
    /// contexts. It catches up from the other producers by asking for the blocks it
    /// lacks.
    pub fn restarted(&self, state: ChainState, now: Instant, rng: &mut impl RngCore) -> Producer {
        let mut producer = Producer::new(
            &self.network,
            self.keypair,
            self.context.clone(),
            state,
            self.config,
            self.approvals.clone(),
            now,
            rng,
        );
        for context in self.earlier.values() {
            producer.learn_term(context.clone());
        }
        producer
    }

    /// What this producer approves for signing: hand it to the federation member's
    /// validator.
    pub fn approvals(&self) -> Approvals {
        self.approvals.clone()
    }

    /// Transfers waiting.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// A transfer submitted to this producer (by the API): its signature is checked.
    pub fn submit(&mut self, transfer: Transfer) -> Result<Admitted, MempoolRefusal> {
        let id = Tx::Transfer(transfer.clone()).id();
        let admitted = self.mempool.insert(transfer, &self.state)?;
        self.remember_verified(id);
        Ok(admitted)
    }

    /// A transfer whose signature the transactions topic's validator checked
    /// ([`super::judge_relay`], on this producer's network): not checked again.
    pub fn submit_verified(&mut self, transfer: Transfer) -> Result<Admitted, MempoolRefusal> {
        let id = Tx::Transfer(transfer.clone()).id();
        let admitted = self.mempool.insert_verified(transfer, &self.state)?;
        self.remember_verified(id);
        Ok(admitted)
    }

    fn remember_verified(&mut self, id: Hash) {
        if self.verified.insert(id) {
            self.verified_order.push_back(id);
            while self.verified_order.len() > VERIFIED_KEPT {
                if let Some(old) = self.verified_order.pop_front() {
                    self.verified.remove(&old);
                }
            }
        }
    }

    /// Checks `block` as a proposal on this producer's tip, skipping the signatures
    /// its mempool already checked.
    fn check(&self, block: &Block) -> Result<CheckedProposal, BlockError> {
        let verified = &self.verified;
        self.state
            .check_proposal(block, &self.context, &self.network, &|tx: &Tx| {
                verified.contains(&tx.id())
            })
    }

    fn message(&self, body: ProducerBody) -> ProducerMessage {
        ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: self.context.term,
            body,
        }
    }

    fn is_first_of_term(&self) -> bool {
        self.state.term != self.context.term || self.state.term_blocks == 0
    }

    /// The `BlockFound` this producer would build on its tip for the term's first
    /// block, not signed yet.
    fn expected_opening(&self) -> TenureChange {
        TenureChange {
            tenure_consensus_hash: self.context.consensus_hash,
            previous_tenure_consensus_hash: self.context.previous_consensus_hash,
            burn_view_consensus_hash: self.context.consensus_hash,
            previous_tenure_end: self.state.tip,
            previous_tenure_blocks: u32::try_from(self.state.term_blocks).unwrap_or(u32::MAX),
            cause: Cause::BlockFound,
            pubkey_hash: pubkey_hash(&self.context.producer_key),
            signature: [0; 65],
            signers: vec![true; SIGNER_SHARES],
        }
    }

    /// On the term's first block, the group may sign the opening this producer would
    /// build itself.
    fn allow_opening(&self) {
        if self.is_first_of_term() {
            self.approvals
                .allow(self.expected_opening().digest(&self.network));
        }
    }

    /// The leader timeout of the current term ([`ProducerConfig::leader_timeout_for`]
    /// its producers).
    fn leader_timeout(&self) -> Duration {
        self.config.leader_timeout_for(self.context.producers.len())
    }

    /// Runs the timers: the election's, the leader's proposals, deposing a silent
    /// leader.
    pub fn on_tick(&mut self, now: Instant, rng: &mut impl RngCore) -> Vec<ProducerOutput> {
        let outputs = self.election.on_tick(now, rng);
        let mut out = self.election_outputs(outputs, now);
        // A term's first block takes two signatures (its opening, then the block), and
        // the producers move to the term one after another: its leader gets twice
        // as long.
        let timeout = if self.is_first_of_term() {
            self.leader_timeout().saturating_mul(2)
        } else {
            self.leader_timeout()
        };
        let silent = now.saturating_duration_since(self.leader_seen) >= timeout;
        match self.election.leader() {
            Some(leader) if leader == self.me => out.extend(self.lead(now)),
            Some(leader) if silent => out.extend(self.depose(leader, Deposed::Silent, now, rng)),
            Some(_) | None => {}
        }
        out
    }

    /// The leader's work: the opening tenure change, then a proposal per interval.
    fn lead(&mut self, now: Instant) -> Vec<ProducerOutput> {
        if let Some(flight) = &self.in_flight {
            if now.saturating_duration_since(flight.started) < self.leader_timeout() {
                return self.maybe_sign();
            }
            // Not signed in time: drop it and propose afresh.
            self.in_flight = None;
        }
        if self.is_first_of_term() && self.opening.is_none() {
            let due = self
                .opening_requested
                .is_none_or(|at| now.saturating_duration_since(at) >= self.leader_timeout());
            if !due {
                return Vec::new();
            }
            self.opening_requested = Some(now);
            return match SignPayload::TenureChange(self.expected_opening()).to_bytes() {
                Ok(payload) => vec![ProducerOutput::Sign { payload }],
                Err(_) => Vec::new(),
            };
        }
        let due = self
            .last_proposal
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.block_interval);
        if !due {
            return Vec::new();
        }
        self.last_proposal = Some(now);
        let opening_txs = match (&self.opening, self.is_first_of_term()) {
            (Some(tc), true) => vec![
                Tx::Coinbase {
                    term: self.context.term,
                    payouts: self.context.coinbase.clone(),
                },
                Tx::TenureChange(tc.clone()),
            ],
            _ => Vec::new(),
        };
        let candidates = self
            .mempool
            .select(&self.state, self.config.max_block_transfers);
        self.proposals = self.proposals.saturating_add(1);
        let Ok((block, _)) = self.state.assemble(
            &self.context,
            opening_txs,
            candidates,
            self.proposals,
            &self.network,
        ) else {
            return Vec::new();
        };
        let round = self.election.round();
        let Some(certificate) = self.election.certificate().cloned() else {
            return Vec::new();
        };
        let Ok(checked) = self.check(&block) else {
            return Vec::new();
        };
        let mut out = vec![ProducerOutput::Broadcast(self.message(
            ProducerBody::Proposal {
                round,
                block: block.clone(),
                certificate,
            },
        ))];
        self.seen.insert(
            (round, block.header.height),
            (block.header.time, block.header.hash()),
        );
        self.precommit(round, block.clone(), checked);
        self.in_flight = Some(InFlight {
            block,
            signing: false,
            started: now,
        });
        out.extend(self.maybe_sign());
        out
    }

    /// Records this producer's pre-commit to `block` in `round`, replacing one of an
    /// earlier round at that height.
    fn precommit(&mut self, round: u64, block: Block, checked: CheckedProposal) {
        let height = block.header.height;
        if let Some((_, old, _)) = self.precommitted.get(&height) {
            self.approvals.revoke(&Block::signing_message(&old.header));
        }
        self.approvals.allow(Block::signing_message(&block.header));
        self.precommitted.insert(height, (round, block, checked));
    }

    /// Asks the federation to sign the proposal in flight, once (rule 3).
    fn maybe_sign(&mut self) -> Vec<ProducerOutput> {
        let Some(flight) = &mut self.in_flight else {
            return Vec::new();
        };
        if flight.signing {
            return Vec::new();
        }
        flight.signing = true;
        match SignPayload::Header(flight.block.header.clone()).to_bytes() {
            Ok(payload) => vec![ProducerOutput::Sign { payload }],
            Err(_) => Vec::new(),
        }
    }

    fn depose(
        &mut self,
        leader: ProducerId,
        why: Deposed,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Vec<ProducerOutput> {
        self.election.depose(why, now, rng);
        self.leader_seen = now;
        // Release the pre-commits given to it.
        let released: Vec<u64> = self
            .precommitted
            .keys()
            .copied()
            .filter(|h| *h > self.state.height)
            .collect();
        for height in released {
            if let Some((_, block, _)) = self.precommitted.remove(&height) {
                self.approvals
                    .revoke(&Block::signing_message(&block.header));
            }
        }
        vec![ProducerOutput::Deposed { leader, why }]
    }

    fn election_outputs(
        &mut self,
        outputs: Vec<ElectionOutput>,
        now: Instant,
    ) -> Vec<ProducerOutput> {
        let mut out = Vec::new();
        for output in outputs {
            match output {
                ElectionOutput::Broadcast(msg) => out.push(ProducerOutput::Broadcast(
                    self.message(ProducerBody::Election(msg)),
                )),
                ElectionOutput::Send { to, msg } => out.push(ProducerOutput::Send {
                    to,
                    msg: self.message(ProducerBody::Election(msg)),
                }),
                ElectionOutput::Elected { round, leader } => {
                    self.leader_seen = now;
                    self.in_flight = None;
                    out.push(ProducerOutput::Leader { round, leader });
                }
            }
        }
        out
    }

    /// Handles `msg` from the authenticated producer `from` (for blocks, any peer).
    pub fn handle(
        &mut self,
        from: ProducerId,
        msg: ProducerMessage,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ProducerOutput>, ProducerRefusal> {
        // Blocks and catch-up requests cross term changes: a producer that moved on
        // still serves and takes the blocks of the terms it kept.
        let crosses = matches!(
            msg.body,
            ProducerBody::Block(_) | ProducerBody::GetBlocks { .. }
        ) && (msg.term.abs_diff(self.context.term) <= 1
            || self.earlier.contains_key(&msg.term));
        if msg.term == self.context.term.saturating_add(1) && !crosses {
            self.early.push_back((from, msg));
            while self.early.len() > EARLY_KEPT {
                self.early.pop_front();
            }
            return Ok(Vec::new());
        }
        if msg.term != self.context.term && !crosses {
            return Err(ProducerRefusal::WrongTerm {
                got: msg.term,
                expected: self.context.term,
            });
        }
        match msg.body {
            ProducerBody::Election(m) => {
                let mut out = Vec::new();
                // A vote request for a later round while the leader has been quiet for
                // half the timeout: the requester has likely lost the leader too, so
                // this producer deposes it now rather than hold the new round back.
                if let (ElectionMessage::RequestVote(vote), Some(leader)) =
                    (&m, self.election.leader())
                {
                    let quiet = now.saturating_duration_since(self.leader_seen)
                        >= self.leader_timeout().checked_div(2).unwrap_or_default();
                    if vote.round > self.election.round() && leader != self.me && quiet {
                        out.extend(self.depose(leader, Deposed::Silent, now, rng));
                    }
                }
                let outputs = self.election.handle(from, m, now, rng)?;
                out.extend(self.election_outputs(outputs, now));
                Ok(out)
            }
            ProducerBody::Proposal {
                round,
                block,
                certificate,
            } => self.on_proposal(from, round, block, certificate, now, rng),
            ProducerBody::Block(block) => self.on_block(from, block, now, rng),
            ProducerBody::GetBlocks { from: height } => Ok(self.serve_blocks(from, height)),
            // The node answers it from its term key book; the protocol has no part.
            ProducerBody::GetTermKeys { .. } => Ok(Vec::new()),
        }
    }

    fn on_proposal(
        &mut self,
        from: ProducerId,
        round: u64,
        block: Block,
        certificate: ElectionMessage,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ProducerOutput>, ProducerRefusal> {
        let mut out = Vec::new();
        if self.election.leader() != Some(from) {
            // A producer that missed the election learns it from the proposal.
            let outputs = self.election.handle(from, certificate.clone(), now, rng)?;
            out.extend(self.election_outputs(outputs, now));
        }
        if self.election.leader() != Some(from) || self.election.round() != round {
            return Err(ProducerRefusal::NotLeader(from));
        }
        self.leader_seen = now;
        let height = block.header.height;
        let hash = block.header.hash();
        let sequence = block.header.time;
        match self.seen.get(&(round, height)) {
            Some((seen, earlier)) if *seen == sequence && *earlier != hash => {
                // Two blocks under one sequence number: equivocation, reported as the
                // leader deposed for misbehaviour.
                out.extend(self.depose(from, Deposed::Misbehaved, now, rng));
                return Ok(out);
            }
            Some((seen, _)) if *seen > sequence => {
                return Err(ProducerRefusal::NotNow("a proposal older than one seen"));
            }
            _ => {}
        }
        self.seen.insert((round, height), (sequence, hash));
        if self.seen.len() > 4 * RECENT_BLOCKS {
            self.seen.pop_first();
        }
        if height <= self.state.height {
            // The leader is behind (it missed a block another producer completed):
            // send it the blocks it lacks.
            out.extend(self.serve_blocks(from, height));
            return Ok(out);
        }
        if height > self.state.height.saturating_add(1) {
            // Behind: keep the proposal for when the blocks below it are in, and ask.
            self.seen.remove(&(round, height));
            self.waiting = Some((from, round, block, certificate));
            out.push(ProducerOutput::Send {
                to: from,
                msg: self.message(ProducerBody::GetBlocks {
                    from: self.state.height.saturating_add(1),
                }),
            });
            return Ok(out);
        }
        let Ok(checked) = self.check(&block) else {
            // An invalid proposal: reported as the leader deposed for misbehaviour.
            out.extend(self.depose(from, Deposed::Misbehaved, now, rng));
            return Ok(out);
        };
        self.precommit(round, block, checked);
        Ok(out)
    }

    /// The federation signed `digest` with `signature`, and `evidence` shows who
    /// signed. If it is the term's opening, the leader can propose; if it is a header
    /// this producer pre-committed, the producer completes the block, applies it and
    /// publishes it (whoever learns the signature first, so a leader that crashes after
    /// signing does not lose the block).
    pub fn on_signed(
        &mut self,
        digest: Hash,
        signature: [u8; 64],
        evidence: SignerEvidence,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Vec<ProducerOutput> {
        if self.announcing.as_ref().is_some_and(|(d, _)| *d == digest)
            && let Some((_, tx)) = self.announcing.take()
        {
            let tx = announce::with_signature(tx, &signature);
            return vec![ProducerOutput::Announce(Box::new(tx))];
        }
        if self.is_first_of_term() && self.opening.is_none() {
            let mut tc = self.expected_opening();
            if tc.digest(&self.network) == digest {
                tc.set_signature(signature);
                self.opening = Some(tc);
                return Vec::new();
            }
        }
        let Some(proposal) = self
            .precommitted
            .values()
            .map(|(_, block, _)| block)
            .find(|b| Block::signing_message(&b.header) == digest)
        else {
            return Vec::new();
        };
        let mut block = proposal.clone();
        block.producer_signature = ByteBuf::from(signature.to_vec());
        block.signers = evidence;
        let Ok(mut out) = self.apply(&block, now, rng) else {
            return Vec::new();
        };
        out.insert(
            0,
            ProducerOutput::Broadcast(self.message(ProducerBody::Block(block))),
        );
        out
    }

    fn on_block(
        &mut self,
        from: ProducerId,
        block: Block,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ProducerOutput>, ProducerRefusal> {
        let height = block.header.height;
        if height <= self.state.height {
            return Ok(Vec::new());
        }
        if height > self.state.height.saturating_add(1) {
            return Ok(vec![ProducerOutput::Send {
                to: from,
                msg: self.message(ProducerBody::GetBlocks {
                    from: self.state.height.saturating_add(1),
                }),
            }]);
        }
        self.apply(&block, now, rng).map_err(Into::into)
    }

    /// Validates and applies `block` on the tip; then takes up a proposal that was
    /// waiting for it.
    fn apply(
        &mut self,
        block: &Block,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ProducerOutput>, BlockError> {
        let mut out = self.apply_one(block, now)?;
        let next = self.state.height.saturating_add(1);
        if let Some((from, round, proposal, certificate)) = self.waiting.take() {
            if proposal.header.height == next {
                // The proposal is checked as if it had just arrived.
                if let Ok(more) = self.on_proposal(from, round, proposal, certificate, now, rng) {
                    out.extend(more);
                }
            } else if proposal.header.height > next {
                self.waiting = Some((from, round, proposal, certificate));
            }
        }
        Ok(out)
    }

    fn apply_one(
        &mut self,
        block: &Block,
        now: Instant,
    ) -> Result<Vec<ProducerOutput>, BlockError> {
        // A block whose proposal this producer checked needs only its signatures
        // checked; any other is validated in full.
        let hash = block.header.hash();
        let changes = match self
            .precommitted
            .get(&block.header.height)
            .filter(|(_, _, checked)| checked.header == hash)
        {
            Some((_, _, checked)) => self.state.validate_checked(block, &self.context, checked)?,
            None => {
                let context = self.context_for(block.header.term);
                self.state.validate(block, context, &self.network)?
            }
        };
        self.state.apply(&changes);
        self.approvals.hold(block.header.height, hash);
        // A late block of the term before moved the tip under the next term's
        // opening: the opening to approve, and to ask for, is the one on the new tip.
        if block.header.term < self.context.term {
            self.opening = None;
            self.opening_requested = None;
            self.allow_opening();
        }
        self.mempool.prune(&self.state);
        self.leader_seen = now;
        let height = block.header.height;
        self.precommitted = self.precommitted.split_off(&height.saturating_add(1));
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.block.header.height <= height)
        {
            self.in_flight = None;
        }
        self.recent.push_back(block.clone());
        while self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_front();
        }
        Ok(vec![ProducerOutput::Applied(Box::new(block.clone()))])
    }

    /// The blocks kept in memory (the last few applied) from height `from` on: what a
    /// node serves a follower catching up.
    pub fn recent_blocks(&self, from: u64) -> impl Iterator<Item = &Block> {
        self.recent.iter().filter(move |b| b.header.height >= from)
    }

    fn serve_blocks(&self, to: ProducerId, from: u64) -> Vec<ProducerOutput> {
        let oldest_kept = self.recent.front().map_or(u64::MAX, |b| b.header.height);
        if from < oldest_kept && from <= self.state.height {
            return vec![ProducerOutput::ServeBlocks {
                to,
                from,
                count: CATCH_UP_BATCH,
                term: self.context.term,
            }];
        }
        self.recent
            .iter()
            .filter(|b| b.header.height >= from)
            .take(CATCH_UP_BATCH)
            .map(|b| ProducerOutput::Send {
                to,
                msg: self.message(ProducerBody::Block(b.clone())),
            })
            .collect()
    }
}

/// Each producer's shares in `context`: its weight in the election.
fn weights_of(context: &TermContext) -> BTreeMap<ProducerId, u64> {
    let mut weights: BTreeMap<ProducerId, u64> = BTreeMap::new();
    for owner in &context.share_owners {
        if let Some((account, _)) = context.producers.get(usize::from(*owner)) {
            let w = weights.entry(ProducerId(account.0)).or_default();
            *w = w.saturating_add(1);
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{SECP256K1, SecretKey};

    fn keypair(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    fn header(height: u64) -> Header {
        Header {
            parent: [1; 32],
            term: 2,
            height,
            tx_root: [2; 32],
            state_root: [3; 32],
            time: 4,
        }
    }

    /// Term `term` of `me` alone, signing with the shared test group's key.
    fn one_producer_term(me: &Keypair, term: u64) -> TermContext {
        use crate::block::{AccountId, build};
        let group = build::ProducerGroup::shared();
        let account = AccountId(ProducerId::of(&me.x_only_public_key().0).0);
        TermContext {
            term,
            producer_key: group.key(),
            producer_shares: group.public.clone(),
            stacker_key: None,
            coinbase: vec![(account, 1_000)],
            cost_limit: 1_000,
            consensus_hash: crate::tenure_change::consensus_hash(term, &[term as u8; 32]),
            previous_consensus_hash: crate::tenure_change::consensus_hash(
                term - 1,
                &[term as u8 - 1; 32],
            ),
            producers: vec![(account, 1)],
            share_owners: vec![0; SIGNER_SHARES],
        }
    }

    /// `me`'s producer of `context` on an empty chain.
    fn starting(
        me: Keypair,
        context: TermContext,
        approvals: Approvals,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Producer {
        Producer::new(
            "net",
            me,
            context,
            ChainState::default(),
            ProducerConfig::default(),
            approvals,
            now,
            rng,
        )
    }

    /// The first block of `me`'s term 3, on an empty chain.
    fn first_block_of_term_three(me: &Keypair) -> Block {
        use crate::block::build;
        let (block, _) = build::term_start(
            &ChainState::default(),
            &one_producer_term(me, 3),
            vec![],
            build::ProducerGroup::shared(),
            None,
            "net",
        )
        .unwrap();
        block
    }

    #[test]
    fn only_what_was_allowed_is_approved_and_revoking_takes_it_back() {
        let approvals = Approvals::default();
        let payload = SignPayload::Header(header(7)).to_bytes().unwrap();
        assert_eq!(
            approvals.approve(&payload, "net"),
            Err(ApprovalRefusal::NotPreCommitted)
        );
        approvals.allow(Block::signing_message(&header(7)));
        assert_eq!(
            approvals.approve(&payload, "net"),
            Ok(Block::signing_message(&header(7)))
        );
        approvals.revoke(&Block::signing_message(&header(7)));
        assert!(approvals.approve(&payload, "net").is_err());
        assert_eq!(
            approvals.approve(b"junk", "net"),
            Err(ApprovalRefusal::Undecodable)
        );
    }

    #[test]
    fn a_late_block_of_the_term_before_moves_the_opening_a_producer_approves() {
        use rand_chacha::{ChaCha12Rng, rand_core::SeedableRng};
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let me = keypair(1);
        let context = |term: u64| one_producer_term(&me, term);
        // Term 3's first block exists; this producer has not received it when term 4
        // begins.
        let late = first_block_of_term_three(&me);
        let approvals = Approvals::default();
        let now = Instant::now();
        let mut producer = starting(me, context(3), approvals.clone(), now, &mut rng);
        let _ = producer.begin_term(context(4), now, &mut rng);
        let stale = SignPayload::TenureChange(producer.expected_opening())
            .to_bytes()
            .unwrap();
        assert!(approvals.approve(&stale, "net").is_ok());

        let msg = ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: 3,
            body: ProducerBody::Block(late),
        };
        producer
            .handle(
                ProducerId::of(&keypair(2).x_only_public_key().0),
                msg,
                now,
                &mut rng,
            )
            .unwrap();
        assert_eq!((producer.state().term, producer.state().height), (3, 1));
        let fresh = SignPayload::TenureChange(producer.expected_opening())
            .to_bytes()
            .unwrap();
        assert_ne!(stale, fresh);
        assert!(
            approvals.approve(&fresh, "net").is_ok(),
            "the opening on the new tip is approved"
        );
    }

    /// Seen in `tenure node` processes: a producer missed the last block of term 3,
    /// term 4 made no block (its leader waited on that producer), and in term 5 the
    /// block came, two terms back. It used to be refused for its term, and the set
    /// stalled.
    #[test]
    fn a_block_missed_before_a_term_with_no_block_is_still_taken_two_terms_on() {
        use rand_chacha::{ChaCha12Rng, rand_core::SeedableRng};
        let mut rng = ChaCha12Rng::seed_from_u64(9);
        let me = keypair(1);
        let context = |term: u64| one_producer_term(&me, term);
        let missed = first_block_of_term_three(&me);
        let now = Instant::now();
        let mut producer = starting(me, context(3), Approvals::default(), now, &mut rng);
        let _ = producer.begin_term(context(4), now, &mut rng);
        let _ = producer.begin_term(context(5), now, &mut rng);
        let msg = ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: 3,
            body: ProducerBody::Block(missed),
        };
        producer
            .handle(
                ProducerId::of(&keypair(2).x_only_public_key().0),
                msg,
                now,
                &mut rng,
            )
            .unwrap();
        assert_eq!((producer.state().term, producer.state().height), (3, 1));
    }

    /// A producer that starts in term 5 (restarted, or newly chosen) on a chain that
    /// is still in term 3 catches up only through term 3's blocks: refused until it
    /// learns term 3's context (the node takes it from the term key's proof), applied
    /// after; a context of its own term or later is not taken as an earlier one.
    #[test]
    fn a_producer_that_starts_later_catches_up_through_terms_it_learns() {
        use rand_chacha::{ChaCha12Rng, rand_core::SeedableRng};
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        let me = keypair(1);
        let context = |term: u64| one_producer_term(&me, term);
        let block = first_block_of_term_three(&me);
        let now = Instant::now();
        let mut producer = starting(me, context(5), Approvals::default(), now, &mut rng);
        let msg = ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: 3,
            body: ProducerBody::Block(block),
        };
        let from = ProducerId::of(&keypair(2).x_only_public_key().0);
        assert!(producer.handle(from, msg.clone(), now, &mut rng).is_err());
        assert_eq!(producer.state().height, 0);
        producer.learn_term(context(6));
        assert_eq!(producer.context_for(6).term, 5);
        producer.learn_term(context(3));
        let mut restarted = producer.restarted(ChainState::default(), now, &mut rng);
        restarted.handle(from, msg, now, &mut rng).unwrap();
        assert_eq!((restarted.state().term, restarted.state().height), (3, 1));
    }

    #[test]
    fn producer_messages_round_trip_and_other_versions_are_refused() {
        let msg = ProducerMessage {
            version: PRODUCER_MESSAGE_VERSION,
            term: 2,
            body: ProducerBody::GetBlocks { from: 9 },
        };
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(ProducerMessage::from_bytes(&bytes).unwrap(), msg);
        let other = ProducerMessage { version: 9, ..msg };
        assert!(ProducerMessage::from_bytes(&other.to_bytes().unwrap()).is_err());
        assert!(ProducerMessage::from_bytes(&[0xff; 10]).is_err());
    }

    /// The leader timeout is worked out from each term's producers, so a term larger
    /// than the one before gets its longer timeout (review: it was fixed when the
    /// producer was made).
    #[test]
    fn the_leader_timeout_grows_with_the_terms_producers_past_ten() {
        let config = ProducerConfig::default();
        assert_eq!(config.leader_timeout_for(5), config.leader_timeout);
        assert_eq!(config.leader_timeout_for(10), config.leader_timeout);
        assert_eq!(
            config.leader_timeout_for(20),
            config.leader_timeout + LEADER_TIMEOUT_PER_PRODUCER * 10
        );
        assert!(config.leader_timeout_for(usize::MAX) >= config.leader_timeout);
    }
}
