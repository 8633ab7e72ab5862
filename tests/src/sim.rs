//! The one seeded simulation harness: a virtual clock, a network of in-flight
//! messages, and faults (loss, duplication, delay and the reordering it causes,
//! partitions, members offline). Every protocol's simulation runs on it: Stacker DB
//! sync, federation channels, signing, and the producer protocol to come.
//!
//! The harness owns time and the messages in flight; the test owns the nodes. The
//! test pulls [`SimEvent`]s: a delivery (handle it at its node, send what comes out
//! with [`SimNet::send`]) or a tick (run every node's timers). Nothing here touches a
//! socket or the wall clock, so a seed replays the same run.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    time::{Duration, Instant},
};

use rand_chacha::{
    ChaCha8Rng,
    rand_core::{RngCore, SeedableRng},
};

/// The simulation's random numbers: ChaCha8 from a seed, so a run replays exactly.
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // The modulo bias is below 2^-40 for the small `n` of a simulation.
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low.saturating_add(self.below(high.saturating_sub(low).saturating_add(1)))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

/// A window of simulated time, in milliseconds since the start: `from..until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First millisecond inside.
    pub from: u64,
    /// First millisecond after.
    pub until: u64,
}

impl Window {
    /// Whether `ms` falls inside.
    pub fn contains(&self, ms: u64) -> bool {
        ms >= self.from && ms < self.until
    }
}

/// What the network does to messages.
#[derive(Clone, Debug)]
pub struct Faults<N> {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message arrives twice (each copy with its own delay).
    pub duplicate: f64,
    /// One-way delay, drawn uniformly from this range in milliseconds; different
    /// delays reorder messages.
    pub delay_ms: (u64, u64),
    /// During each window, the nodes listed are cut off from the others (messages
    /// sent across are lost).
    pub partitions: Vec<(Window, Vec<N>)>,
    /// Nodes offline during a window: what they send and what reaches them is lost,
    /// and they get no ticks.
    pub offline: Vec<(N, Window)>,
}

impl<N> Default for Faults<N> {
    fn default() -> Faults<N> {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            delay_ms: (1, 1),
            partitions: Vec::new(),
            offline: Vec::new(),
        }
    }
}

/// What happens next in the simulation.
#[derive(Debug)]
pub enum SimEvent<N, M> {
    /// A message arrives at `to`.
    Deliver {
        /// The sender.
        from: N,
        /// The receiver.
        to: N,
        /// The message.
        msg: M,
    },
    /// A tick: run every online node's timers.
    Tick,
}

/// Counts of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered (duplicates count twice).
    pub delivered: u64,
    /// Messages lost to loss, partitions or offline nodes.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
}

/// A message in flight, ordered by arrival time then by when it was sent.
type InFlight = Reverse<(u64, u64)>;

/// A simulated network of nodes named by `N` carrying messages `M`.
pub struct SimNet<N, M> {
    base: Instant,
    now_ms: u64,
    tick_ms: u64,
    next_tick_ms: u64,
    queue: BinaryHeap<InFlight>,
    in_flight: BTreeMap<u64, (N, N, M)>,
    seq: u64,
    /// The run's random numbers (for the test's own choices too, so one seed
    /// decides everything).
    pub rng: SimRng,
    /// The faults in force; the test may change them as the run goes.
    pub faults: Faults<N>,
    /// What the network did so far.
    pub stats: SimStats,
}

impl<N: Copy + PartialEq, M: Clone> SimNet<N, M> {
    /// A network replaying `seed`, ticking every `tick`.
    pub fn new(seed: u64, tick: Duration, faults: Faults<N>) -> SimNet<N, M> {
        let tick_ms = u64::try_from(tick.as_millis()).unwrap_or(u64::MAX).max(1);
        SimNet {
            base: Instant::now(),
            now_ms: 0,
            tick_ms,
            next_tick_ms: tick_ms,
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            rng: SimRng::new(seed),
            faults,
            stats: SimStats::default(),
        }
    }

    /// The simulated time, as an instant to hand to sans-IO code.
    pub fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether `node` is offline now.
    pub fn is_offline(&self, node: N) -> bool {
        self.faults
            .offline
            .iter()
            .any(|(n, window)| *n == node && window.contains(self.now_ms))
    }

    /// Whether a partition separates `a` from `b` now.
    pub fn partitioned(&self, a: N, b: N) -> bool {
        self.faults.partitions.iter().any(|(window, side)| {
            window.contains(self.now_ms) && (side.contains(&a) != side.contains(&b))
        })
    }

    /// Sends `msg` from `from` to `to`, subject to the faults.
    pub fn send(&mut self, from: N, to: N, msg: M) {
        self.send_with(from, to, msg, 0, |_, _| {});
    }

    /// Sends `msg` `extra_ms` later than the drawn delay (a slow sender), with `alter`
    /// applied to each copy (a relay tampering with it).
    pub fn send_with(
        &mut self,
        from: N,
        to: N,
        msg: M,
        extra_ms: u64,
        mut alter: impl FnMut(&mut SimRng, &mut M),
    ) {
        self.stats.sent += 1;
        if self.is_offline(from) || self.partitioned(from, to) || self.rng.chance(self.faults.loss)
        {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut copy = msg.clone();
            alter(&mut self.rng, &mut copy);
            let (low, high) = self.faults.delay_ms;
            let at = self
                .now_ms
                .saturating_add(self.rng.between(low, high))
                .saturating_add(extra_ms);
            self.seq += 1;
            self.queue.push(Reverse((at, self.seq)));
            self.in_flight.insert(self.seq, (from, to, copy));
        }
    }

    /// The next event before `until_ms`: the next message due by the next tick, else
    /// that tick. `None` once the clock reached `until_ms`.
    pub fn next_event(&mut self, until_ms: u64) -> Option<SimEvent<N, M>> {
        loop {
            if self.now_ms >= until_ms {
                return None;
            }
            let due =
                matches!(self.queue.peek(), Some(Reverse((at, _))) if *at <= self.next_tick_ms);
            if !due {
                self.now_ms = self.next_tick_ms;
                self.next_tick_ms = self.next_tick_ms.saturating_add(self.tick_ms);
                return Some(SimEvent::Tick);
            }
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                continue;
            };
            self.now_ms = self.now_ms.max(at);
            let Some((from, to, msg)) = self.in_flight.remove(&seq) else {
                continue;
            };
            if self.is_offline(to) {
                self.stats.lost += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(SimEvent::Deliver { from, to, msg });
        }
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
