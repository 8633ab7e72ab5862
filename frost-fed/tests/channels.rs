//! Member channels over a hostile network: loss, duplication, reordering, a relay
//! that alters and replays frames, a restart. Every message arrives exactly once,
//! nothing altered or replayed is delivered, and large messages cross in fragments.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{Rng, keypair, member};
use tenure_frost_fed::{
    MemberId,
    channel::{ChannelConfig, ChannelKey, ChannelOutput, Channels, noise_keypair},
};

struct Net {
    base: Instant,
    now_ms: u64,
    nodes: BTreeMap<MemberId, Channels>,
    privates: BTreeMap<MemberId, Vec<u8>>,
    directory: Vec<ChannelKey>,
    in_flight: Vec<(u64, MemberId, Vec<u8>)>,
    seen_frames: Vec<(MemberId, Vec<u8>)>,
    delivered: BTreeMap<MemberId, Vec<(MemberId, Vec<u8>)>>,
    rng: Rng,
    drop: f64,
    duplicate: f64,
    alter: f64,
}

impl Net {
    fn new(n: u8, seed: u64) -> Net {
        let mut privates = BTreeMap::new();
        let mut directory = Vec::new();
        for seed in 1..=n {
            let (private, public) = noise_keypair().unwrap();
            directory.push(ChannelKey::bind(&keypair(seed), public, vec![seed; 38]));
            privates.insert(member(seed), private);
        }
        let nodes = privates
            .iter()
            .map(|(m, p)| {
                (
                    *m,
                    Channels::new(*m, p.clone(), &directory, ChannelConfig::default()),
                )
            })
            .collect();
        Net {
            base: Instant::now(),
            now_ms: 0,
            nodes,
            privates,
            directory,
            in_flight: Vec::new(),
            seen_frames: Vec::new(),
            delivered: BTreeMap::new(),
            rng: Rng(seed | 1),
            drop: 0.2,
            duplicate: 0.1,
            alter: 0.05,
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn apply(&mut self, at: MemberId, outputs: Vec<ChannelOutput>) {
        for output in outputs {
            match output {
                ChannelOutput::Transmit { to, frame } => {
                    self.seen_frames.push((to, frame.clone()));
                    if self.rng.chance(self.drop) {
                        continue;
                    }
                    let copies = if self.rng.chance(self.duplicate) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let mut frame = frame.clone();
                        if self.rng.chance(self.alter) {
                            // A relay flips a byte somewhere past the header.
                            let i = frame.len() - 1 - (self.rng.next() as usize % 20);
                            frame[i] ^= 0x40;
                        }
                        let at_ms = self.now_ms + 1 + self.rng.next() % 50;
                        self.in_flight.push((at_ms, to, frame));
                    }
                }
                ChannelOutput::Deliver { from, payload } => {
                    self.delivered.entry(at).or_default().push((from, payload));
                }
                ChannelOutput::Undeliverable { to, reason } => panic!("{at} → {to}: {reason}"),
            }
        }
    }

    fn send(&mut self, from: MemberId, to: MemberId, payload: Vec<u8>) {
        let now = self.now();
        let out = self.nodes.get_mut(&from).unwrap().send(to, payload, now);
        self.apply(from, out);
    }

    fn run_until(&mut self, until_ms: u64) {
        while self.now_ms < until_ms {
            self.now_ms += 10;
            let now = self.now();
            let due: Vec<(u64, MemberId, Vec<u8>)>;
            (due, self.in_flight) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|(at, _, _)| *at <= self.now_ms);
            for (_, to, frame) in due {
                let out = self.nodes.get_mut(&to).unwrap().handle(&frame, now);
                self.apply(to, out);
            }
            let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
            for id in ids {
                let out = self.nodes.get_mut(&id).unwrap().on_tick(now);
                self.apply(id, out);
            }
        }
    }
}

#[test]
fn every_message_arrives_once_through_loss_duplication_alteration_and_reordering() {
    for seed in [3u64, 5, 8, 13, 21, 34, 55, 89] {
        let mut net = Net::new(3, seed);
        let (a, b, c) = (member(1), member(2), member(3));
        let mut expected: BTreeMap<MemberId, BTreeSet<(MemberId, Vec<u8>)>> = BTreeMap::new();
        for i in 0..60u32 {
            for (from, to) in [(a, b), (b, a), (c, a), (b, c)] {
                let payload = format!("{from} to {to}: {i}").into_bytes();
                expected
                    .entry(to)
                    .or_default()
                    .insert((from, payload.clone()));
                net.send(from, to, payload);
            }
            net.run_until(net.now_ms + 20);
        }
        // One message needs five fragments.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        expected.entry(c).or_default().insert((a, big.clone()));
        net.send(a, c, big);
        net.run_until(net.now_ms + 30_000);

        for (to, want) in &expected {
            let got = &net.delivered[to];
            let unique: BTreeSet<(MemberId, Vec<u8>)> = got.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                got.len(),
                "seed {seed}: {to} got a message twice"
            );
            let missing = want.difference(&unique).count();
            let extra = unique.difference(want).count();
            assert!(
                missing == 0 && extra == 0,
                "seed {seed}: {to} is missing {missing} messages and got {extra} never sent"
            );
        }
        for node in net.nodes.values() {
            for peer in [a, b, c] {
                assert_eq!(
                    node.unacked(&peer),
                    0,
                    "seed {seed}: unacked messages remain"
                );
            }
        }
    }
}

#[test]
fn replayed_frames_are_never_delivered_again() {
    let mut net = Net::new(2, 9);
    net.drop = 0.0;
    net.duplicate = 0.0;
    net.alter = 0.0;
    let (a, b) = (member(1), member(2));
    for i in 0..20u8 {
        net.send(a, b, vec![i; 100]);
    }
    net.run_until(2_000);
    assert_eq!(net.delivered[&b].len(), 20);
    // A relay replays every frame it ever saw.
    let replay = net.seen_frames.clone();
    for (to, frame) in replay {
        let now = net.now();
        let out = net.nodes.get_mut(&to).unwrap().handle(&frame, now);
        assert!(
            !out.iter()
                .any(|o| matches!(o, ChannelOutput::Deliver { .. })),
            "a replayed frame was delivered"
        );
    }
    assert_eq!(net.delivered[&b].len(), 20);
}

#[test]
fn a_restarted_member_gets_a_new_session_and_the_pending_messages() {
    let mut net = Net::new(2, 4);
    net.drop = 0.0;
    let (a, b) = (member(1), member(2));
    net.send(a, b, b"before".to_vec());
    net.run_until(1_000);
    // b restarts: it keeps its keys but loses every session.
    let private = net.privates[&b].clone();
    net.nodes.insert(
        b,
        Channels::new(b, private, &net.directory, ChannelConfig::default()),
    );
    net.send(a, b, b"after".to_vec());
    net.run_until(20_000);
    let got: Vec<String> = net.delivered[&b]
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert_eq!(got, vec!["before".to_owned(), "after".to_owned()]);
}

#[test]
fn forged_bindings_are_ignored_and_full_buffers_refuse() {
    let (private, public) = noise_keypair().unwrap();
    let good = ChannelKey::bind(&keypair(2), public, vec![2; 38]);
    let mut forged = good.clone();
    forged.overlay_peer = serde_bytes::ByteBuf::from(vec![9; 38]);
    assert!(good.verify() && !forged.verify());
    let me = member(1);
    let mut channels = Channels::new(
        me,
        private,
        &[forged],
        ChannelConfig {
            max_unacked: 2,
            ..ChannelConfig::default()
        },
    );
    let now = Instant::now();
    let out = channels.send(member(2), b"x".to_vec(), now);
    assert!(matches!(out[..], [ChannelOutput::Undeliverable { .. }]));

    let (p1, _) = noise_keypair().unwrap();
    let mut channels = Channels::new(
        me,
        p1,
        &[good],
        ChannelConfig {
            max_unacked: 2,
            ..ChannelConfig::default()
        },
    );
    channels.send(member(2), b"1".to_vec(), now);
    channels.send(member(2), b"2".to_vec(), now);
    let out = channels.send(member(2), b"3".to_vec(), now);
    assert!(
        matches!(&out[..], [ChannelOutput::Undeliverable { reason, .. }] if reason.contains("full"))
    );
}
