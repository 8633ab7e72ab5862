//! The producer set's leader election ([`tenure_chain::produce::election`]) in the
//! shared seeded simulation: ten producers of unequal weight, lost, duplicated,
//! delayed and reordered messages, a producer partitioned away, a byzantine producer
//! forging votes and certificates, and the elected leader crashing.
//!
//! The proposals that keep a leader in office are not part of this simulation: the
//! leader sends a "still leading" message to everyone every 200 ms, carrying its
//! certificate as proposals do, and a producer that hears nothing from its leader for
//! 1 s deposes it, as the producer protocol does when no proposal comes.
//!
//! For every seed: no two producers ever accept different leaders for one round;
//! every online producer follows the same leader within 2 s; after the leader
//! crashes, every online producer follows a new leader within 3 s.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use tenure_chain::produce::{
    Deposed, Election, ElectionConfig, ElectionMessage, ElectionOutput, ProducerId, Vote,
};
use tenure_tests::sim::{Faults, SimEvent, SimNet, Window};

const NETWORK: &str = "election-sim";
const TERM: u64 = 4;
const TICK: Duration = Duration::from_millis(10);
/// Shares of the ten producers (100 in all), heaviest first.
const WEIGHTS: [u64; 10] = [19, 16, 14, 12, 10, 9, 8, 5, 4, 3];
/// The byzantine producer (index), and the one partitioned for a while.
const BYZANTINE: usize = 9;
const PARTITIONED: usize = 8;
const LEADING_EVERY_MS: u64 = 200;
const DEPOSE_AFTER_MS: u64 = 1_000;
const CRASH_AT_MS: u64 = 4_000;

#[derive(Clone, Debug)]
enum Msg {
    Election(ElectionMessage),
    /// The leader is still leading (stands in for its proposals), with its certificate.
    Leading {
        certificate: ElectionMessage,
    },
}

fn keypair(n: usize) -> Keypair {
    Keypair::from_secret_key(
        SECP256K1,
        &SecretKey::from_slice(&[n as u8 + 1; 32]).unwrap(),
    )
}

fn id(n: usize) -> ProducerId {
    ProducerId::of(&keypair(n).x_only_public_key().0)
}

struct Producer {
    election: Election,
    /// When the leader was last heard from.
    leader_seen: Instant,
    last_leading: Instant,
}

struct Sim {
    net: SimNet<usize, Msg>,
    producers: Vec<Producer>,
    /// Every (round, leader) any producer accepted.
    accepted: BTreeMap<u64, ProducerId>,
    refusals: usize,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let faults = Faults {
            loss: 0.05,
            duplicate: 0.05,
            delay_ms: (5, 60),
            partitions: vec![(
                Window {
                    from: 500,
                    until: 2_500,
                },
                vec![PARTITIONED],
            )],
            ..Faults::default()
        };
        let mut net = SimNet::new(seed, TICK, faults);
        let weights: BTreeMap<ProducerId, u64> =
            (0..WEIGHTS.len()).map(|n| (id(n), WEIGHTS[n])).collect();
        let now = net.now();
        let producers = (0..WEIGHTS.len())
            .map(|n| Producer {
                election: Election::start(
                    NETWORK,
                    TERM,
                    keypair(n),
                    weights.clone(),
                    ElectionConfig::default(),
                    now,
                    &mut net.rng,
                ),
                leader_seen: now,
                last_leading: now,
            })
            .collect();
        Sim {
            net,
            producers,
            accepted: BTreeMap::new(),
            refusals: 0,
        }
    }

    fn index_of(leader: ProducerId) -> usize {
        (0..WEIGHTS.len()).find(|n| id(*n) == leader).unwrap()
    }

    fn dispatch(&mut self, from: usize, outputs: Vec<ElectionOutput>) {
        for output in outputs {
            match output {
                ElectionOutput::Broadcast(msg) => {
                    for to in (0..WEIGHTS.len()).filter(|to| *to != from) {
                        self.net.send(from, to, Msg::Election(msg.clone()));
                    }
                }
                ElectionOutput::Send { to, msg } => {
                    self.net.send(from, Self::index_of(to), Msg::Election(msg));
                }
                ElectionOutput::Elected { round, leader } => {
                    let previous = self.accepted.insert(round, leader);
                    assert!(
                        previous.is_none_or(|p| p == leader),
                        "two leaders in round {round}: {previous:?} and {leader}"
                    );
                    self.producers[from].leader_seen = self.net.now();
                }
            }
        }
    }

    /// The byzantine producer's forgeries, sent to everyone each tick: a certificate
    /// naming itself with too little weight, a vote in another producer's name, and a
    /// certificate repeating one vote.
    fn forge(&mut self) {
        let round = self.producers[BYZANTINE].election.round();
        let weak = ElectionMessage::Elected {
            round,
            leader: id(BYZANTINE),
            votes: vec![Vote::sign(
                NETWORK,
                TERM,
                round,
                id(BYZANTINE),
                &keypair(BYZANTINE),
            )],
        };
        let mut stolen = Vote::sign(NETWORK, TERM, round, id(BYZANTINE), &keypair(BYZANTINE));
        stolen.voter = id(0);
        let repeated = ElectionMessage::Elected {
            round: round + 1,
            leader: id(BYZANTINE),
            votes: vec![
                Vote::sign(NETWORK, TERM, round + 1, id(BYZANTINE), &keypair(BYZANTINE));
                8
            ],
        };
        for to in (0..WEIGHTS.len()).filter(|to| *to != BYZANTINE) {
            for msg in [
                weak.clone(),
                ElectionMessage::Vote(stolen.clone()),
                repeated.clone(),
            ] {
                self.net.send(BYZANTINE, to, Msg::Election(msg));
            }
        }
    }

    fn run_until(&mut self, until_ms: u64) {
        while let Some(event) = self.net.next_event(until_ms) {
            let now = self.net.now();
            match event {
                SimEvent::Tick => {
                    if self.net.now_ms().is_multiple_of(100) {
                        self.forge();
                    }
                    for n in 0..WEIGHTS.len() {
                        if self.net.is_offline(n) {
                            continue;
                        }
                        let out = {
                            let p = &mut self.producers[n];
                            p.election.on_tick(now, &mut self.net.rng)
                        };
                        self.dispatch(n, out);
                        let p = &mut self.producers[n];
                        let leading = p.election.leader() == Some(id(n));
                        let following = p.election.leader().is_some() && !leading;
                        let since_leading = now.duration_since(p.last_leading);
                        let since_seen = now.duration_since(p.leader_seen);
                        if leading && since_leading >= Duration::from_millis(LEADING_EVERY_MS) {
                            p.last_leading = now;
                            let certificate = p.election.certificate().unwrap().clone();
                            for to in (0..WEIGHTS.len()).filter(|to| *to != n) {
                                let certificate = certificate.clone();
                                self.net.send(n, to, Msg::Leading { certificate });
                            }
                        } else if following && since_seen >= Duration::from_millis(DEPOSE_AFTER_MS)
                        {
                            p.election.depose(Deposed::Silent, now, &mut self.net.rng);
                        }
                    }
                }
                SimEvent::Deliver { from, to, msg } => match msg {
                    Msg::Election(msg) => {
                        let result = self.producers[to].election.handle(
                            id(from),
                            msg,
                            now,
                            &mut self.net.rng,
                        );
                        match result {
                            Ok(out) => self.dispatch(to, out),
                            Err(_) => self.refusals += 1,
                        }
                    }
                    Msg::Leading { certificate } => {
                        let p = &mut self.producers[to];
                        if p.election.leader() == Some(id(from)) {
                            p.leader_seen = now;
                        } else if let Ok(out) =
                            p.election
                                .handle(id(from), certificate, now, &mut self.net.rng)
                        {
                            // A producer that missed the election learns it here.
                            self.dispatch(to, out);
                        }
                    }
                },
            }
        }
    }

    /// The leader every online producer follows, if they agree on one.
    fn common_leader(&self) -> Option<ProducerId> {
        let mut leaders = (0..WEIGHTS.len())
            .filter(|n| !self.net.is_offline(*n) && *n != BYZANTINE)
            .map(|n| self.producers[n].election.leader());
        let first = leaders.next()??;
        leaders.all(|l| l == Some(first)).then_some(first)
    }

    /// Runs in steps of 10 ms until every online producer follows one leader.
    fn run_until_agreed(&mut self, deadline_ms: u64) -> Option<(ProducerId, u64)> {
        while self.net.now_ms() < deadline_ms {
            let step = self.net.now_ms() + 10;
            self.run_until(step);
            if let Some(leader) = self.common_leader() {
                return Some((leader, self.net.now_ms()));
            }
        }
        None
    }
}

#[test]
fn producers_agree_on_one_leader_and_replace_it_when_it_crashes_for_many_seeds() {
    let mut first_ms = Vec::new();
    let mut failover_ms = Vec::new();
    for seed in 1..=20u64 {
        let mut sim = Sim::new(seed);
        let (leader, at) = sim
            .run_until_agreed(2_000)
            .unwrap_or_else(|| panic!("seed {seed}: no common leader within 2 s"));
        assert_ne!(
            leader,
            id(BYZANTINE),
            "seed {seed}: the forger was followed"
        );
        first_ms.push(at);

        // The leader keeps its office while it leads, through the partition's end.
        sim.run_until(CRASH_AT_MS);
        let (still, _) = sim
            .run_until_agreed(CRASH_AT_MS + 1_000)
            .unwrap_or_else(|| panic!("seed {seed}: producers disagree before the crash"));

        // The leader crashes for good.
        let crashed = Sim::index_of(still);
        sim.net.faults.offline.push((
            crashed,
            Window {
                from: CRASH_AT_MS,
                until: u64::MAX,
            },
        ));
        // Wait until no one follows the crashed leader and all follow one new leader.
        let deadline = sim.net.now_ms() + 3_000;
        let mut replaced = None;
        while sim.net.now_ms() < deadline {
            let step = sim.net.now_ms() + 10;
            sim.run_until(step);
            if let Some(new) = sim.common_leader()
                && new != still
            {
                replaced = Some((new, sim.net.now_ms()));
                break;
            }
        }
        let (new, at) =
            replaced.unwrap_or_else(|| panic!("seed {seed}: the crashed leader was not replaced"));
        assert_ne!(new, id(BYZANTINE), "seed {seed}: the forger was followed");
        failover_ms.push(at - CRASH_AT_MS);
        assert!(sim.refusals > 0, "the forgeries were sent and refused");
    }
    first_ms.sort_unstable();
    failover_ms.sort_unstable();
    eprintln!(
        "first leader (ms, simulated): median {} max {}; crash to new leader: median {} max {}",
        first_ms[first_ms.len() / 2],
        first_ms[first_ms.len() - 1],
        failover_ms[failover_ms.len() / 2],
        failover_ms[failover_ms.len() - 1]
    );
}
