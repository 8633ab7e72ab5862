//! Leader election within a term's producer set (seed 001 "Producer Set
//! Collaboration"), as a sans-IO state machine.
//!
//! The SIP's rules, and what Tenure fixes where it is silent:
//!
//! - **Rounds.** An election proceeds in numbered rounds until a leader is chosen by at
//!   least 67% of the set's weight ([`LEADER_THRESHOLD_PERCENT`]). At the start of a
//!   round each producer waits a random time. If no vote request reaches it first, it
//!   puts itself forward: it votes for itself and sends a vote request to every
//!   producer.
//! - **Random, but staggered.** The SIP leaves the distribution open. Independent
//!   timeouts split the vote whenever two producers time out within one network delay
//!   of each other, and with 67% of the weight needed a split round elects nobody:
//!   with ten producers and a 150 ms window that is nearly every round. So the
//!   randomness is shared: every producer ranks the set by a hash of (network, term,
//!   round, producer), and waits `base + rank · slot` plus a private jitter below
//!   `base` ([`ElectionConfig`]). The first-ranked producer stands alone unless it is
//!   down, and the next one stands a slot later; the ranking changes every round, so no
//!   producer is favoured.
//! - **One vote per round.** A producer that receives a vote request votes for the
//!   candidate if it has neither voted nor stood in that round. A request for a later
//!   round moves the producer to that round, unless it follows a leader it has not
//!   deposed (a minority cannot unseat a working leader: it lacks the weight anyway).
//! - **A leader is proven, not claimed.** Votes are BIP340 signatures by the producers'
//!   enrollment signing keys over (network, term, round, candidate). A candidate whose
//!   votes reach the threshold sends every producer an `Elected` certificate carrying
//!   them, which anyone checks on its own. Two leaders in one round would need a
//!   producer holding more than a third of the weight to vote twice.
//! - **Rounds end.** A round in which no leader emerges within
//!   [`ElectionConfig::round_timeout`] (split votes, lost messages) is followed by the
//!   next. All timeouts are relative to a producer's own clock: no wall clock is shared.
//! - **Deposing.** The producer protocol deposes a leader that stops proposing, proposes
//!   an invalid block or equivocates ([`Election::depose`]). A leader deposed for
//!   misbehaviour never gets this producer's vote or allegiance again in the term. A
//!   leader deposed for silence may only have been cut off from this producer (or this
//!   producer from everyone), so it may be voted for again, and followed again once it
//!   shows it is alive: its certificate is adopted when the leader itself sends it, not
//!   when a follower relays it (a crashed leader's followers would otherwise hand it
//!   back to everyone who deposed it).
//! - **Catching up.** A producer that follows a leader answers a vote request for a
//!   later round with the leader's certificate (once per candidate and round), and a
//!   producer without a leader adopts any valid certificate, whatever its round, for a
//!   leader it has not deposed for misbehaviour. So a producer that was partitioned
//!   away, and stood alone in rounds nobody else ran, rejoins the set's leader.
//!
//! Every message is checked before it changes anything: the term, the voter's
//! membership and signature, and that the transport's authenticated sender is the
//! voter (or the candidate). Anything else is refused with an [`ElectionRefusal`].

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, Message, SECP256K1, XOnlyPublicKey, schnorr};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

/// Percentage of the set's weight a leader needs.
pub const LEADER_THRESHOLD_PERCENT: u64 = 67;

/// A producer, named by the x-only signing key of its enrollment.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ProducerId(pub [u8; 32]);

impl ProducerId {
    /// The producer whose enrollment signing key is `key`.
    pub fn of(key: &XOnlyPublicKey) -> ProducerId {
        ProducerId(key.serialize())
    }
}

impl std::fmt::Display for ProducerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0.iter().take(4) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One producer's vote for `candidate` in `round` of `term`'s election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The term.
    pub term: u64,
    /// The round.
    pub round: u64,
    /// Whom the vote is for.
    pub candidate: ProducerId,
    /// Who votes.
    pub voter: ProducerId,
    /// BIP340 signature by the voter over [`Vote::digest`].
    pub signature: ByteBuf,
}

impl Vote {
    /// What a vote signs.
    pub fn digest(network: &str, term: u64, round: u64, candidate: &ProducerId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tenure/produce/vote/v1");
        h.update((network.len() as u64).to_be_bytes());
        h.update(network.as_bytes());
        h.update(term.to_be_bytes());
        h.update(round.to_be_bytes());
        h.update(candidate.0);
        h.finalize().into()
    }

    /// `keypair`'s vote for `candidate`.
    pub fn sign(
        network: &str,
        term: u64,
        round: u64,
        candidate: ProducerId,
        keypair: &Keypair,
    ) -> Vote {
        let message = Message::from_digest(Vote::digest(network, term, round, &candidate));
        let signature = SECP256K1.sign_schnorr(&message, keypair);
        Vote {
            term,
            round,
            candidate,
            voter: ProducerId::of(&keypair.x_only_public_key().0),
            signature: ByteBuf::from(signature.as_ref().to_vec()),
        }
    }

    /// Whether the voter's signature is valid.
    pub fn signature_valid(&self, network: &str) -> bool {
        let Ok(key) = XOnlyPublicKey::from_slice(&self.voter.0) else {
            return false;
        };
        let Ok(signature) = schnorr::Signature::from_slice(&self.signature) else {
            return false;
        };
        let digest = Vote::digest(network, self.term, self.round, &self.candidate);
        SECP256K1
            .verify_schnorr(&signature, &Message::from_digest(digest), &key)
            .is_ok()
    }
}

/// What producers send each other during an election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionMessage {
    /// A candidate asks for votes, carrying its own vote for itself.
    RequestVote(Vote),
    /// A vote, sent to its candidate.
    Vote(Vote),
    /// The leader's certificate: votes of at least the threshold's weight.
    Elected {
        /// The round won.
        round: u64,
        /// The leader.
        leader: ProducerId,
        /// The votes for it.
        votes: Vec<Vote>,
    },
}

/// What the election asks its driver to do, or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionOutput {
    /// Send to every other producer.
    Broadcast(ElectionMessage),
    /// Send to one producer.
    Send {
        /// The receiver.
        to: ProducerId,
        /// The message.
        msg: ElectionMessage,
    },
    /// A leader is known (this producer, or a certificate it checked).
    Elected {
        /// The round it won.
        round: u64,
        /// The leader.
        leader: ProducerId,
    },
}

/// Why a message changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElectionRefusal {
    /// The message is for another term.
    #[error("vote for term {got}, this election is term {expected}")]
    WrongTerm {
        /// The message's term.
        got: u64,
        /// This election's term.
        expected: u64,
    },
    /// The voter is not in the producer set.
    #[error("{0} is not a producer of this term")]
    NotAProducer(ProducerId),
    /// The vote's signature does not verify.
    #[error("vote by {0} has an invalid signature")]
    BadSignature(ProducerId),
    /// The sender is not who the message speaks for.
    #[error("sent by {sender}, but speaks for {claimed}")]
    WrongSender {
        /// The authenticated sender.
        sender: ProducerId,
        /// Whom the message speaks for.
        claimed: ProducerId,
    },
    /// A certificate's votes do not reach the threshold, or are not all for its leader
    /// in its round.
    #[error("certificate for {leader} in round {round} is not valid: {why}")]
    BadCertificate {
        /// The claimed leader.
        leader: ProducerId,
        /// The claimed round.
        round: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The message is stale or does not fit the producer's state (not misbehaviour).
    #[error("not acted on: {0}")]
    NotNow(&'static str),
}

/// Why a leader is deposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deposed {
    /// It stopped proposing (or this producer stopped hearing it).
    Silent,
    /// It proposed an invalid block or equivocated.
    Misbehaved,
}

/// Timing of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// The least wait at a round's start, and the bound of the private jitter added.
    pub base_timeout: Duration,
    /// The wait added per rank: more than a one-way network delay, so the first-ranked
    /// producer's request arrives before the next one's timer.
    pub slot: Duration,
    /// A round without a leader ends this long after the producer voted or stood.
    pub round_timeout: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            base_timeout: Duration::from_millis(50),
            slot: Duration::from_millis(150),
            round_timeout: Duration::from_millis(1000),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a vote request until the random timeout.
    Waiting { until: Instant },
    /// Voted for `candidate` in this round.
    Voted { until: Instant },
    /// Standing in this round, collecting votes.
    Standing {
        until: Instant,
        votes: BTreeMap<ProducerId, Vote>,
    },
    /// A leader is known, with the certificate that proves it.
    Led {
        leader: ProducerId,
        certificate: ElectionMessage,
    },
}

/// One producer's view of its term's leader election.
#[derive(Debug)]
pub struct Election {
    network: String,
    term: u64,
    keypair: Keypair,
    me: ProducerId,
    weights: BTreeMap<ProducerId, u64>,
    total: u64,
    config: ElectionConfig,
    round: u64,
    phase: Phase,
    /// Leaders deposed for misbehaviour in this term.
    deposed: BTreeSet<ProducerId>,
    /// Leaders deposed for silence, until they show they are alive.
    silent: BTreeSet<ProducerId>,
    /// Candidates already sent the certificate, with the round they asked in.
    relayed: BTreeSet<(ProducerId, u64)>,
}

/// `now + by`, or `now` if that cannot be represented.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}

impl Election {
    /// The election of `term` among `weights` (each producer's weight, e.g. its shares),
    /// as seen by the holder of `keypair`; round 1 starts now.
    pub fn start(
        network: &str,
        term: u64,
        keypair: Keypair,
        weights: BTreeMap<ProducerId, u64>,
        config: ElectionConfig,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Election {
        let total = weights.values().fold(0u64, |t, w| t.saturating_add(*w));
        let me = ProducerId::of(&keypair.x_only_public_key().0);
        let mut election = Election {
            network: network.to_owned(),
            term,
            keypair,
            me,
            weights,
            total,
            config,
            round: 0,
            phase: Phase::Waiting { until: now },
            deposed: BTreeSet::new(),
            silent: BTreeSet::new(),
            relayed: BTreeSet::new(),
        };
        election.next_round(1, now, rng);
        election
    }

    /// The leader, once known.
    pub fn leader(&self) -> Option<ProducerId> {
        match &self.phase {
            Phase::Led { leader, .. } => Some(*leader),
            _ => None,
        }
    }

    /// The current leader's certificate, to hand to a producer that lacks it.
    pub fn certificate(&self) -> Option<&ElectionMessage> {
        match &self.phase {
            Phase::Led { certificate, .. } => Some(certificate),
            _ => None,
        }
    }

    /// The current round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// This producer.
    pub fn me(&self) -> ProducerId {
        self.me
    }

    /// Whether `weight` reaches the threshold of the set's weight.
    pub fn reaches_threshold(&self, weight: u64) -> bool {
        u128::from(weight).saturating_mul(100)
            >= u128::from(self.total).saturating_mul(u128::from(LEADER_THRESHOLD_PERCENT))
            && weight > 0
    }

    /// Drops the current leader and starts the next round. A leader deposed for
    /// misbehaviour will not get this producer's vote again in this term.
    pub fn depose(&mut self, why: Deposed, now: Instant, rng: &mut impl RngCore) {
        if let Some(leader) = self.leader() {
            match why {
                Deposed::Misbehaved => self.deposed.insert(leader),
                Deposed::Silent => self.silent.insert(leader),
            };
            self.next_round(self.round.saturating_add(1), now, rng);
        }
    }

    /// Producers deposed for misbehaviour in this term.
    pub fn deposed(&self) -> &BTreeSet<ProducerId> {
        &self.deposed
    }

    /// Runs the timers.
    pub fn on_tick(&mut self, now: Instant, rng: &mut impl RngCore) -> Vec<ElectionOutput> {
        match &self.phase {
            Phase::Waiting { until } if now >= *until => self.stand(now),
            Phase::Voted { until } | Phase::Standing { until, .. } if now >= *until => {
                self.next_round(self.round.saturating_add(1), now, rng);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Handles `msg` from the authenticated producer `from`.
    pub fn handle(
        &mut self,
        from: ProducerId,
        msg: ElectionMessage,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ElectionOutput>, ElectionRefusal> {
        match msg {
            ElectionMessage::RequestVote(vote) => {
                self.check_vote(&vote, from)?;
                if vote.candidate != vote.voter {
                    return Err(ElectionRefusal::WrongSender {
                        sender: vote.voter,
                        claimed: vote.candidate,
                    });
                }
                self.on_request(vote, now, rng)
            }
            ElectionMessage::Vote(vote) => {
                self.check_vote(&vote, from)?;
                self.on_vote(vote)
            }
            ElectionMessage::Elected {
                round,
                leader,
                votes,
            } => {
                self.check_certificate(round, leader, &votes)?;
                if self.deposed.contains(&leader) {
                    return Err(ElectionRefusal::NotNow("leader deposed for misbehaviour"));
                }
                if self.silent.contains(&leader) && from != leader {
                    return Err(ElectionRefusal::NotNow(
                        "a silent leader's certificate, relayed",
                    ));
                }
                self.silent.remove(&leader);
                // Following a leader, only a later election replaces it; without one,
                // any valid certificate is adopted (a producer that was cut off may
                // have run rounds alone).
                if let Some(current) = self.leader()
                    && (round < self.round || (round == self.round && current == leader))
                {
                    return Err(ElectionRefusal::NotNow("certificate of a past round"));
                }
                self.round = round;
                self.phase = Phase::Led {
                    leader,
                    certificate: ElectionMessage::Elected {
                        round,
                        leader,
                        votes,
                    },
                };
                Ok(vec![ElectionOutput::Elected { round, leader }])
            }
        }
    }

    fn check_vote(&self, vote: &Vote, from: ProducerId) -> Result<(), ElectionRefusal> {
        if vote.term != self.term {
            return Err(ElectionRefusal::WrongTerm {
                got: vote.term,
                expected: self.term,
            });
        }
        if vote.voter != from {
            return Err(ElectionRefusal::WrongSender {
                sender: from,
                claimed: vote.voter,
            });
        }
        if !self.weights.contains_key(&vote.voter) {
            return Err(ElectionRefusal::NotAProducer(vote.voter));
        }
        if !vote.signature_valid(&self.network) {
            return Err(ElectionRefusal::BadSignature(vote.voter));
        }
        Ok(())
    }

    fn check_certificate(
        &self,
        round: u64,
        leader: ProducerId,
        votes: &[Vote],
    ) -> Result<(), ElectionRefusal> {
        let bad = |why| ElectionRefusal::BadCertificate { leader, round, why };
        if votes.len() > self.weights.len() {
            return Err(bad("more votes than producers"));
        }
        let mut voters = BTreeSet::new();
        let mut weight = 0u64;
        for vote in votes {
            if vote.term != self.term || vote.round != round || vote.candidate != leader {
                return Err(bad("a vote for another term, round or candidate"));
            }
            let Some(w) = self.weights.get(&vote.voter) else {
                return Err(bad("a vote by a non-producer"));
            };
            if !voters.insert(vote.voter) {
                return Err(bad("two votes by one producer"));
            }
            if !vote.signature_valid(&self.network) {
                return Err(bad("a vote with an invalid signature"));
            }
            weight = weight.saturating_add(*w);
        }
        if !self.reaches_threshold(weight) {
            return Err(bad("votes below the threshold"));
        }
        Ok(())
    }

    fn on_request(
        &mut self,
        request: Vote,
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Vec<ElectionOutput>, ElectionRefusal> {
        if request.round < self.round {
            return Err(ElectionRefusal::NotNow("request for a past round"));
        }
        if request.round > self.round {
            if let Some(certificate) = self.certificate().cloned() {
                // Following a leader: tell the candidate who it is, once per round.
                if !self.relayed.insert((request.candidate, request.round)) {
                    return Err(ElectionRefusal::NotNow("following a leader not deposed"));
                }
                if self.relayed.len() > self.weights.len().saturating_mul(4) {
                    self.relayed.pop_first();
                }
                return Ok(vec![ElectionOutput::Send {
                    to: request.candidate,
                    msg: certificate,
                }]);
            }
            self.next_round(request.round, now, rng);
        }
        if !matches!(self.phase, Phase::Waiting { .. }) {
            return Err(ElectionRefusal::NotNow("already voted or standing"));
        }
        if self.deposed.contains(&request.candidate) {
            return Err(ElectionRefusal::NotNow("candidate deposed in this term"));
        }
        let vote = Vote::sign(
            &self.network,
            self.term,
            self.round,
            request.candidate,
            &self.keypair,
        );
        self.phase = Phase::Voted {
            until: later(now, self.config.round_timeout),
        };
        Ok(vec![ElectionOutput::Send {
            to: request.candidate,
            msg: ElectionMessage::Vote(vote),
        }])
    }

    fn on_vote(&mut self, vote: Vote) -> Result<Vec<ElectionOutput>, ElectionRefusal> {
        if vote.round != self.round || vote.candidate != self.me {
            return Err(ElectionRefusal::NotNow(
                "vote for another round or candidate",
            ));
        }
        let Phase::Standing { votes, .. } = &mut self.phase else {
            return Err(ElectionRefusal::NotNow("not standing"));
        };
        votes.insert(vote.voter, vote);
        let weight = votes
            .keys()
            .filter_map(|v| self.weights.get(v))
            .fold(0u64, |t, w| t.saturating_add(*w));
        let votes: Vec<Vote> = votes.values().cloned().collect();
        if !self.reaches_threshold(weight) {
            return Ok(Vec::new());
        }
        let round = self.round;
        let leader = self.me;
        let certificate = ElectionMessage::Elected {
            round,
            leader,
            votes,
        };
        self.phase = Phase::Led {
            leader,
            certificate: certificate.clone(),
        };
        Ok(vec![
            ElectionOutput::Broadcast(certificate),
            ElectionOutput::Elected { round, leader },
        ])
    }

    /// Puts this producer forward in the current round.
    fn stand(&mut self, now: Instant) -> Vec<ElectionOutput> {
        let vote = Vote::sign(&self.network, self.term, self.round, self.me, &self.keypair);
        let mut votes = BTreeMap::new();
        votes.insert(self.me, vote.clone());
        self.phase = Phase::Standing {
            until: later(now, self.config.round_timeout),
            votes,
        };
        // A producer holding the threshold alone is elected at once.
        if let Ok(mut out) = self.on_vote(vote.clone()) {
            if !out.is_empty() {
                return out;
            }
            out.push(ElectionOutput::Broadcast(ElectionMessage::RequestVote(
                vote,
            )));
            return out;
        }
        vec![ElectionOutput::Broadcast(ElectionMessage::RequestVote(
            vote,
        ))]
    }

    fn next_round(&mut self, round: u64, now: Instant, rng: &mut impl RngCore) {
        self.round = round;
        let base = u64::try_from(self.config.base_timeout.as_millis()).unwrap_or(u64::MAX);
        let slot = u64::try_from(self.config.slot.as_millis()).unwrap_or(u64::MAX);
        let jitter = rng.next_u64().checked_rem(base.max(1)).unwrap_or(0);
        let rank = self.rank(round);
        let wait = base
            .saturating_add(rank.saturating_mul(slot))
            .saturating_add(jitter);
        self.phase = Phase::Waiting {
            until: later(now, Duration::from_millis(wait)),
        };
    }

    /// This producer's place in `round`'s order of standing: how many producers hash
    /// below it.
    fn rank(&self, round: u64) -> u64 {
        let ticket = |p: &ProducerId| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(b"tenure/produce/election-rank/v1");
            h.update((self.network.len() as u64).to_be_bytes());
            h.update(self.network.as_bytes());
            h.update(self.term.to_be_bytes());
            h.update(round.to_be_bytes());
            h.update(p.0);
            h.finalize().into()
        };
        let mine = ticket(&self.me);
        self.weights.keys().filter(|p| ticket(p) < mine).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::SecretKey;
    use rand_core::OsRng;

    fn keypair(n: u8) -> Keypair {
        Keypair::from_secret_key(SECP256K1, &SecretKey::from_slice(&[n; 32]).unwrap())
    }

    fn id(n: u8) -> ProducerId {
        ProducerId::of(&keypair(n).x_only_public_key().0)
    }

    fn elections(weights: &[(u8, u64)], now: Instant) -> BTreeMap<ProducerId, Election> {
        let w: BTreeMap<ProducerId, u64> = weights.iter().map(|(n, w)| (id(*n), *w)).collect();
        weights
            .iter()
            .map(|(n, _)| {
                (
                    id(*n),
                    Election::start(
                        "net",
                        7,
                        keypair(*n),
                        w.clone(),
                        ElectionConfig::default(),
                        now,
                        &mut OsRng,
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn a_candidate_with_two_thirds_of_the_weight_is_elected_and_proven_to_all() {
        let now = Instant::now();
        let mut all = elections(&[(1, 40), (2, 30), (3, 20), (4, 10)], now);
        // Producer 1 times out first and stands.
        let later = now + Duration::from_secs(2);
        let out = all.get_mut(&id(1)).unwrap().on_tick(later, &mut OsRng);
        let [ElectionOutput::Broadcast(request)] = out.as_slice() else {
            panic!("{out:?}")
        };
        // 2 votes: 40 + 30 = 70 of 100.
        let out = all
            .get_mut(&id(2))
            .unwrap()
            .handle(id(1), request.clone(), now, &mut OsRng)
            .unwrap();
        let [ElectionOutput::Send { to, msg }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*to, id(1));
        let out = all
            .get_mut(&id(1))
            .unwrap()
            .handle(id(2), msg.clone(), later, &mut OsRng)
            .unwrap();
        assert_eq!(all[&id(1)].leader(), Some(id(1)));
        let ElectionOutput::Broadcast(certificate) = &out[0] else {
            panic!("{out:?}")
        };
        // Producer 4 never voted, and still learns the leader from the certificate.
        let out = all
            .get_mut(&id(4))
            .unwrap()
            .handle(id(1), certificate.clone(), later, &mut OsRng)
            .unwrap();
        assert_eq!(
            out,
            vec![ElectionOutput::Elected {
                round: 1,
                leader: id(1)
            }]
        );
    }

    #[test]
    fn forged_votes_and_certificates_change_nothing() {
        let now = Instant::now();
        let mut all = elections(&[(1, 40), (2, 30), (3, 20), (4, 10)], now);
        let e = all.get_mut(&id(4)).unwrap();
        // A vote request relayed by someone else than its candidate.
        let request = ElectionMessage::RequestVote(Vote::sign("net", 7, 1, id(1), &keypair(1)));
        assert!(matches!(
            e.handle(id(2), request, now, &mut OsRng),
            Err(ElectionRefusal::WrongSender { .. })
        ));
        // An outsider's vote request.
        let outsider = ElectionMessage::RequestVote(Vote::sign("net", 7, 1, id(9), &keypair(9)));
        assert_eq!(
            e.handle(id(9), outsider, now, &mut OsRng),
            Err(ElectionRefusal::NotAProducer(id(9)))
        );
        // A certificate whose votes add up to 50 of 100.
        let weak = ElectionMessage::Elected {
            round: 1,
            leader: id(3),
            votes: vec![
                Vote::sign("net", 7, 1, id(3), &keypair(3)),
                Vote::sign("net", 7, 1, id(2), &keypair(2)),
            ],
        };
        assert!(matches!(
            e.handle(id(3), weak, now, &mut OsRng),
            Err(ElectionRefusal::BadCertificate { .. })
        ));
        // A certificate repeating one heavy vote.
        let repeated = ElectionMessage::Elected {
            round: 1,
            leader: id(1),
            votes: vec![Vote::sign("net", 7, 1, id(1), &keypair(1)); 2],
        };
        assert!(matches!(
            e.handle(id(1), repeated, now, &mut OsRng),
            Err(ElectionRefusal::BadCertificate { .. })
        ));
        // A vote with a tampered signature.
        let mut vote = Vote::sign("net", 7, 1, id(1), &keypair(2));
        vote.round = 2;
        assert_eq!(
            e.handle(id(2), ElectionMessage::Vote(vote), now, &mut OsRng),
            Err(ElectionRefusal::BadSignature(id(2)))
        );
        assert_eq!(e.leader(), None);
        assert_eq!(e.round(), 1);
    }

    #[test]
    fn a_producer_that_ran_rounds_alone_adopts_the_sets_leader_unless_it_misbehaved() {
        let now = Instant::now();
        let mut all = elections(&[(1, 40), (2, 30), (3, 20), (4, 10)], now);
        let certificate = ElectionMessage::Elected {
            round: 1,
            leader: id(1),
            votes: [1, 2]
                .map(|n| Vote::sign("net", 7, 1, id(1), &keypair(n)))
                .to_vec(),
        };
        let e = all.get_mut(&id(4)).unwrap();
        // Cut off, producer 4 times out through rounds 1..=5 by itself.
        let mut t = now;
        for _ in 0..10 {
            t += Duration::from_secs(2);
            e.on_tick(t, &mut OsRng);
        }
        assert!(e.round() > 1);
        e.handle(id(1), certificate.clone(), t, &mut OsRng).unwrap();
        assert_eq!(e.leader(), Some(id(1)));
        // Deposed for silence, it is followed again when it sends its certificate
        // itself, not when another relays it...
        e.depose(Deposed::Silent, t, &mut OsRng);
        assert!(e.handle(id(2), certificate.clone(), t, &mut OsRng).is_err());
        e.handle(id(1), certificate.clone(), t, &mut OsRng).unwrap();
        assert_eq!(e.leader(), Some(id(1)));
        // ...but not once deposed for misbehaviour.
        e.depose(Deposed::Misbehaved, t, &mut OsRng);
        assert!(e.handle(id(2), certificate, t, &mut OsRng).is_err());
        assert_eq!(e.leader(), None);
    }

    #[test]
    fn one_vote_per_round_and_none_for_a_deposed_leader() {
        let now = Instant::now();
        let mut all = elections(&[(1, 40), (2, 30), (3, 20), (4, 10)], now);
        let e = all.get_mut(&id(4)).unwrap();
        let ask = |n: u8, round: u64| {
            ElectionMessage::RequestVote(Vote::sign("net", 7, round, id(n), &keypair(n)))
        };
        assert_eq!(
            e.handle(id(1), ask(1, 1), now, &mut OsRng).unwrap().len(),
            1
        );
        assert!(e.handle(id(2), ask(2, 1), now, &mut OsRng).is_err());
        // Producer 1 becomes leader, then is deposed: round 2, and no vote for it.
        let certificate = ElectionMessage::Elected {
            round: 1,
            leader: id(1),
            votes: [1, 2]
                .map(|n| Vote::sign("net", 7, 1, id(1), &keypair(n)))
                .to_vec(),
        };
        e.handle(id(1), certificate, now, &mut OsRng).unwrap();
        assert_eq!(e.leader(), Some(id(1)));
        // While it follows a leader, a request for a later round gets the certificate
        // (once), not a vote.
        let out = e.handle(id(3), ask(3, 2), now, &mut OsRng).unwrap();
        assert!(matches!(
            out.as_slice(),
            [ElectionOutput::Send {
                msg: ElectionMessage::Elected { .. },
                ..
            }]
        ));
        assert!(e.handle(id(3), ask(3, 2), now, &mut OsRng).is_err());
        e.depose(Deposed::Misbehaved, now, &mut OsRng);
        assert_eq!((e.leader(), e.round()), (None, 2));
        assert!(e.handle(id(1), ask(1, 2), now, &mut OsRng).is_err());
        assert_eq!(
            e.handle(id(3), ask(3, 2), now, &mut OsRng).unwrap().len(),
            1
        );
    }
}
