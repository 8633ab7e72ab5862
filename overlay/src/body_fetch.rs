//! Fetching announced bodies: whom to ask, how long, how many at once, and whom to blame.
//!
//! A node that receives an announcement (see [`crate::bodies`]) must get the body or the
//! message is lost to it: gossipsub has already put the message id in its duplicate
//! cache, so copies forwarded by other peers are dropped unseen. A peer that announces
//! and never serves (a *withholder*) would otherwise keep the message from every node
//! whose first copy came through it. The rules, sans-IO (the swarm task sends the
//! requests and passes time in):
//!
//! - **Ask the announcer first, then everyone who may hold it.** The peer that forwarded
//!   the announcement accepted the message, so it must hold the body. If it has not
//!   answered within [`HEDGE`], or refuses, the next candidate is asked: the topic's mesh
//!   peers, then every other peer subscribed to the topic, each once per round. A peer
//!   that answered "not held" may simply not have fetched it yet, so when every candidate
//!   has been asked a new round starts after a pause that doubles each round (from
//!   [`HEDGE`]), until [`FETCH_DEADLINE`] (inside gossipsub's history window, after which
//!   the message could no longer be forwarded anyway).
//! - **Announcing without serving is misbehaviour.** An announcer that refuses the body,
//!   or whose request fails, is reported to the caller, which penalises it
//!   ([`crate::reputation::Misbehaviour::WithheldBody`]).
//! - **Bounded per announcer and in total.** At most [`MAX_FETCHES_PER_ANNOUNCER`] fetches
//!   started by one peer's announcements are open at once, and [`MAX_FETCHES`] in all.
//!   An honest peer serves what it announces at once, so its fetches close within a
//!   round trip; only a peer announcing bodies it does not serve reaches its bound, and
//!   an announcement past it is ignored and penalised. Its refusals are penalised too,
//!   so a withholder is banned after a handful. The bound is generous on purpose: an
//!   honest message whose first copy came through a withholder is lost to this node if
//!   it is ignored (gossipsub's duplicate cache drops the other copies), and it is
//!   fetched from the other peers when it is kept.
//! - **One fetch per body.** An announcement of a body already being fetched (another
//!   message with the same content) waits for that fetch instead of starting another.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use crate::bodies::BodyDigest;

/// Fetches open at most, all announcers together.
pub const MAX_FETCHES: usize = 1024;

/// Fetches started by one peer's announcements open at most.
pub const MAX_FETCHES_PER_ANNOUNCER: usize = 128;

/// How long a request may go unanswered before another peer is asked as well.
pub const HEDGE: Duration = Duration::from_millis(250);

/// How long a body may take, all requests together. Gossipsub keeps an unvalidated
/// message for its history window (4.2 s with the default parameters).
pub const FETCH_DEADLINE: Duration = Duration::from_secs(3);

/// Whether an announcement starts a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announced<P> {
    /// A new fetch: ask this peer (the announcer) now.
    Ask(P),
    /// The body is already being fetched; the message waits for it.
    Joined,
    /// Over a bound: the announcement is ignored. `flooding` when the announcer is over
    /// its own bound (it announced that many bodies without serving them).
    TooMany {
        /// The announcer's own bound was reached.
        flooding: bool,
    },
}

/// What a refused or failed request means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused<P> {
    /// The peer that did not serve.
    pub peer: P,
    /// Whether that peer announced the body to us (and so should have held it).
    pub announcer: bool,
    /// The body's digest.
    pub digest: BodyDigest,
}

/// A fetch given up at its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired<P, W> {
    /// The body's digest.
    pub digest: BodyDigest,
    /// The messages that will not complete.
    pub waiters: Vec<W>,
    /// Announcers asked for it that never answered.
    pub silent: Vec<P>,
}

#[derive(Debug)]
struct Fetch<P, W> {
    size: u64,
    /// The peer whose announcement started the fetch (counted against its bound).
    starter: P,
    /// Every peer that forwarded an announcement of this body to us.
    announcers: Vec<P>,
    /// The messages that complete when the body arrives.
    waiters: Vec<W>,
    /// Peers asked in the current round.
    asked: Vec<P>,
    /// Requests without an answer yet.
    outstanding: usize,
    /// Pause before the next round.
    pause: Duration,
    /// When another peer is asked if no body has arrived.
    next_ask: Instant,
    deadline: Instant,
}

/// The fetches in flight, keyed by body digest. `P` is a peer, `R` a request id, `W`
/// what the caller needs to finish a message once its body is in.
#[derive(Debug)]
pub struct BodyFetches<P, R, W> {
    fetches: HashMap<BodyDigest, Fetch<P, W>>,
    requests: HashMap<R, (BodyDigest, P)>,
}

impl<P, R, W> Default for BodyFetches<P, R, W> {
    fn default() -> Self {
        BodyFetches {
            fetches: HashMap::new(),
            requests: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq, R: Eq + Hash, W> BodyFetches<P, R, W> {
    /// An announcement of `digest` (`size` bytes) arrived from `announcer`.
    pub fn announce(
        &mut self,
        digest: BodyDigest,
        size: u64,
        announcer: P,
        waiter: W,
        now: Instant,
    ) -> Announced<P> {
        if let Some(fetch) = self.fetches.get_mut(&digest) {
            if fetch.size != size {
                return Announced::TooMany { flooding: false };
            }
            if !fetch.announcers.contains(&announcer) {
                fetch.announcers.push(announcer);
            }
            fetch.waiters.push(waiter);
            return Announced::Joined;
        }
        let started_by = self
            .fetches
            .values()
            .filter(|f| f.starter == announcer)
            .count();
        if started_by >= MAX_FETCHES_PER_ANNOUNCER {
            return Announced::TooMany { flooding: true };
        }
        if self.fetches.len() >= MAX_FETCHES {
            return Announced::TooMany { flooding: false };
        }
        self.fetches.insert(
            digest,
            Fetch {
                size,
                starter: announcer,
                announcers: vec![announcer],
                waiters: vec![waiter],
                asked: Vec::new(),
                outstanding: 0,
                pause: HEDGE,
                next_ask: now,
                deadline: now + FETCH_DEADLINE,
            },
        );
        Announced::Ask(announcer)
    }

    /// A request for `digest` went to `peer`.
    pub fn asked(&mut self, digest: BodyDigest, peer: P, request: R, now: Instant) {
        if let Some(fetch) = self.fetches.get_mut(&digest) {
            fetch.asked.push(peer);
            fetch.outstanding += 1;
            fetch.next_ask = now + HEDGE;
            self.requests.insert(request, (digest, peer));
        }
    }

    /// Whether `request` is one of ours.
    pub fn is_fetch(&self, request: &R) -> bool {
        self.requests.contains_key(request)
    }

    /// The digest and announced size a body answering `request` must match, if its fetch
    /// is still open.
    pub fn expected(&self, request: &R) -> Option<(BodyDigest, u64)> {
        let (digest, _) = self.requests.get(request)?;
        Some((*digest, self.fetches.get(digest)?.size))
    }

    /// A checked body for `digest` arrived: the fetch ends and its waiters are returned.
    pub fn complete(&mut self, request: &R, digest: &BodyDigest) -> Vec<W> {
        self.requests.remove(request);
        self.requests.retain(|_, (d, _)| d != digest);
        self.fetches
            .remove(digest)
            .map(|f| f.waiters)
            .unwrap_or_default()
    }

    /// `request` was refused, failed, or brought a wrong body. The caller may ask the
    /// next candidate at once ([`BodyFetches::next_candidate`]).
    pub fn refused(&mut self, request: &R, now: Instant) -> Option<Refused<P>> {
        let (digest, peer) = self.requests.remove(request)?;
        let fetch = self.fetches.get_mut(&digest)?;
        fetch.outstanding = fetch.outstanding.saturating_sub(1);
        if fetch.outstanding == 0 {
            fetch.next_ask = now;
        }
        Some(Refused {
            peer,
            announcer: fetch.announcers.contains(&peer),
            digest,
        })
    }

    /// Fetches due another request now: none answered within [`HEDGE`], or the last one
    /// was refused.
    pub fn due(&self, now: Instant) -> Vec<BodyDigest> {
        self.fetches
            .iter()
            .filter(|(_, f)| now >= f.next_ask && now < f.deadline)
            .map(|(digest, _)| *digest)
            .collect()
    }

    /// The next peer to ask for `digest` among `candidates` (the topic's mesh peers first,
    /// then its other peers): the first not asked in this round. When every candidate
    /// has been asked, the next round starts after a pause that doubles each round.
    /// Announcers that were asked are never asked again.
    pub fn next_candidate(
        &mut self,
        digest: &BodyDigest,
        candidates: &[P],
        now: Instant,
    ) -> Option<P> {
        let fetch = self.fetches.get_mut(digest)?;
        if let Some(peer) = candidates.iter().find(|p| !fetch.asked.contains(p)) {
            return Some(*peer);
        }
        let announcers = &fetch.announcers;
        fetch.asked.retain(|p| announcers.contains(p));
        fetch.next_ask = now + fetch.pause;
        fetch.pause = fetch.pause.saturating_mul(2);
        None
    }

    /// Fetches past their deadline, removed: each with its waiters and the announcers
    /// still silent on a request for it (withholding by silence).
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<P, W>> {
        let expired: Vec<BodyDigest> = self
            .fetches
            .iter()
            .filter(|(_, f)| now >= f.deadline)
            .map(|(digest, _)| *digest)
            .collect();
        let mut out = Vec::with_capacity(expired.len());
        for digest in expired {
            if let Some(fetch) = self.fetches.remove(&digest) {
                let mut silent = Vec::new();
                self.requests.retain(|_, (d, peer)| {
                    let open = *d == digest;
                    if open && fetch.announcers.contains(peer) && !silent.contains(peer) {
                        silent.push(*peer);
                    }
                    !open
                });
                out.push(Expired {
                    digest,
                    waiters: fetch.waiters,
                    silent,
                });
            }
        }
        out
    }

    /// The first message waiting for `digest`.
    pub fn waiter(&self, digest: &BodyDigest) -> Option<&W> {
        self.fetches.get(digest)?.waiters.first()
    }

    /// Fetches open.
    pub fn len(&self) -> usize {
        self.fetches.len()
    }

    /// Whether no fetch is open.
    pub fn is_empty(&self) -> bool {
        self.fetches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fetches = BodyFetches<u8, u32, &'static str>;

    #[test]
    fn the_announcer_is_asked_first_and_others_after_a_refusal_or_a_silence() {
        let now = Instant::now();
        let mut f = Fetches::default();
        assert_eq!(f.announce([1; 32], 10, 7, "m", now), Announced::Ask(7));
        f.asked([1; 32], 7, 100, now);
        // Nothing is due until the hedge passes.
        assert!(f.due(now).is_empty());
        assert_eq!(f.due(now + HEDGE), vec![[1; 32]]);
        assert_eq!(f.next_candidate(&[1; 32], &[7, 3, 4], now + HEDGE), Some(3));
        f.asked([1; 32], 3, 101, now + HEDGE);
        // The announcer refuses: it is named, and never asked again.
        let refused = f.refused(&100, now + HEDGE).unwrap();
        assert_eq!(
            refused,
            Refused {
                peer: 7,
                announcer: true,
                digest: [1; 32]
            }
        );
        assert!(!f.refused(&101, now + HEDGE).unwrap().announcer);
        assert_eq!(f.next_candidate(&[1; 32], &[7, 3, 4], now + HEDGE), Some(4));
        f.asked([1; 32], 4, 102, now + HEDGE);
        let t = now + HEDGE;
        f.refused(&102, t);
        // Every candidate asked: after a pause, a new round asks 3 again, not the announcer.
        assert_eq!(f.due(t), vec![[1; 32]]);
        assert_eq!(f.next_candidate(&[1; 32], &[7, 3, 4], t), None);
        assert!(f.due(t).is_empty());
        assert_eq!(f.due(t + HEDGE), vec![[1; 32]]);
        assert_eq!(f.next_candidate(&[1; 32], &[7, 3, 4], t + HEDGE), Some(3));
        f.asked([1; 32], 3, 103, t + HEDGE);
        assert_eq!(f.expected(&103), Some(([1; 32], 10)));
        assert_eq!(f.complete(&103, &[1; 32]), vec!["m"]);
        assert!(f.is_empty());
        assert!(!f.is_fetch(&100));
    }

    #[test]
    fn a_second_announcement_of_the_same_body_waits_for_the_first_fetch() {
        let now = Instant::now();
        let mut f = Fetches::default();
        assert_eq!(f.announce([1; 32], 10, 7, "a", now), Announced::Ask(7));
        assert_eq!(f.announce([1; 32], 10, 8, "b", now), Announced::Joined);
        // A different size for the same digest is a lie by one of them.
        assert_eq!(
            f.announce([1; 32], 11, 9, "c", now),
            Announced::TooMany { flooding: false }
        );
        f.asked([1; 32], 7, 1, now);
        // Both announcers should hold it.
        f.asked([1; 32], 8, 2, now);
        assert!(f.refused(&2, now).unwrap().announcer);
        assert_eq!(f.complete(&1, &[1; 32]), vec!["a", "b"]);
    }

    #[test]
    fn one_announcer_fills_only_its_own_share_and_its_fetches_expire() {
        let now = Instant::now();
        let mut f = Fetches::default();
        for i in 0..MAX_FETCHES_PER_ANNOUNCER {
            assert_eq!(
                f.announce([i as u8; 32], 1, 9, "bogus", now),
                Announced::Ask(9)
            );
        }
        assert_eq!(
            f.announce([200; 32], 1, 9, "bogus", now),
            Announced::TooMany { flooding: true }
        );
        // Another peer's announcement still starts a fetch.
        assert_eq!(f.announce([201; 32], 1, 2, "good", now), Announced::Ask(2));
        f.asked([0; 32], 9, 1, now);
        let mut expired = f.expire(now + FETCH_DEADLINE);
        assert_eq!(expired.len(), MAX_FETCHES_PER_ANNOUNCER + 1);
        expired.sort_by_key(|e| e.digest);
        assert_eq!(expired[0].silent, vec![9], "asked and never answered");
        assert!(expired[1].silent.is_empty(), "never asked");
        assert!(!f.is_fetch(&1));
        assert!(f.is_empty());
        assert!(f.due(now + FETCH_DEADLINE).is_empty());
    }

    #[test]
    fn the_total_is_bounded_across_announcers() {
        let now = Instant::now();
        let mut f = BodyFetches::<u16, u32, ()>::default();
        for i in 0..MAX_FETCHES {
            let mut digest = [0; 32];
            digest[..2].copy_from_slice(&(i as u16).to_le_bytes());
            assert_eq!(
                f.announce(digest, 1, i as u16, (), now),
                Announced::Ask(i as u16)
            );
        }
        assert_eq!(
            f.announce([255; 32], 1, 9999, (), now),
            Announced::TooMany { flooding: false }
        );
        assert_eq!(f.len(), MAX_FETCHES);
    }
}
