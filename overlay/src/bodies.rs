//! Large gossip messages: announced by digest, their bodies pulled once per node.
//!
//! Gossipsub pushes every message to every mesh peer, and each copy is signature-checked
//! and hashed in full before duplicates are dropped. For megabyte blocks that makes each
//! node receive and check several full copies. So a message above
//! [`crate::GossipParams::large_message_bytes`] travels as a signed
//! [`Payload::Announce`] (digest and size, a few dozen bytes); a node that
//! receives one fetches the body over request-response from the peer that forwarded the
//! announcement (which accepted it, so it holds the body), checks it against the digest,
//! runs the topic's validator and only then accepts the announcement, which forwards it.
//! Every node downloads each body once. The publisher's signature covers the digest, so
//! the body is as authenticated as an inline message. If the announcer does not serve
//! the body, the other peers of the topic are asked and the announcer is penalised
//! (the rules are in [`crate::body_fetch`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};

use crate::wire::Versioned;

/// A SHA-256 digest of a message body.
pub type BodyDigest = [u8; 32];

/// Largest envelope accepted around an announcement (inline envelopes are bounded by
/// gossipsub's own transmit size).
pub const MAX_ANNOUNCE_BYTES: usize = 128;

/// What every gossip message carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEnvelope {
    /// Envelope version.
    pub version: u16,
    /// The message, or its announcement.
    pub payload: Payload,
}

/// The two ways a message travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A small message, whole.
    Inline(ByteBuf),
    /// A large message: its digest and size; the body is pulled.
    Announce {
        /// SHA-256 of the body.
        digest: ByteBuf,
        /// Length of the body in bytes.
        size: u64,
    },
}

impl Versioned for GossipEnvelope {
    const VERSION: u16 = 1;
    fn version(&self) -> u16 {
        self.version
    }
}

impl GossipEnvelope {
    /// An inline envelope.
    pub fn inline(data: Vec<u8>) -> Self {
        GossipEnvelope {
            version: Self::VERSION,
            payload: Payload::Inline(ByteBuf::from(data)),
        }
    }

    /// An announcement of `body`.
    pub fn announce(digest: BodyDigest, size: usize) -> Self {
        GossipEnvelope {
            version: Self::VERSION,
            payload: Payload::Announce {
                digest: ByteBuf::from(digest.to_vec()),
                size: size as u64,
            },
        }
    }
}

/// SHA-256 of a body.
pub fn digest_of(body: &[u8]) -> BodyDigest {
    Sha256::digest(body).into()
}

/// Why a fetched body or an announcement was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The announced digest is not 32 bytes.
    #[error("announced digest has {0} bytes, expected 32")]
    BadDigest(usize),
    /// The announced size is above the largest message allowed.
    #[error("announced size {size} exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Largest message allowed.
        limit: usize,
    },
    /// The body's length differs from the announcement.
    #[error("body has {got} bytes, the announcement said {announced}")]
    WrongSize {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        announced: u64,
    },
    /// The body hashes to something else.
    #[error("body does not match its announced digest")]
    WrongDigest,
}

/// Checks an announcement's fields and returns its digest.
pub fn check_announcement(digest: &[u8], size: u64, limit: usize) -> Result<BodyDigest, BodyError> {
    let digest: BodyDigest = digest
        .try_into()
        .map_err(|_| BodyError::BadDigest(digest.len()))?;
    if size > limit as u64 {
        return Err(BodyError::TooLarge { size, limit });
    }
    Ok(digest)
}

/// Checks a fetched body against its announcement.
pub fn check_body(body: &[u8], digest: &BodyDigest, size: u64) -> Result<(), BodyError> {
    if body.len() as u64 != size {
        return Err(BodyError::WrongSize {
            got: body.len(),
            announced: size,
        });
    }
    if &digest_of(body) != digest {
        return Err(BodyError::WrongDigest);
    }
    Ok(())
}

/// Bodies this node can serve, bounded in bytes and in age.
#[derive(Debug)]
pub struct BodyStore {
    bodies: HashMap<BodyDigest, (Arc<Vec<u8>>, Instant)>,
    order: VecDeque<BodyDigest>,
    bytes: usize,
    max_bytes: usize,
    max_age: Duration,
}

impl BodyStore {
    /// A store holding at most `max_bytes` of bodies, none older than `max_age`.
    pub fn new(max_bytes: usize, max_age: Duration) -> Self {
        BodyStore {
            bodies: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_age,
        }
    }

    /// Keeps `body` under `digest`, evicting the oldest bodies to make room.
    pub fn insert(&mut self, digest: BodyDigest, body: Arc<Vec<u8>>, now: Instant) {
        if self.bodies.contains_key(&digest) || body.len() > self.max_bytes {
            return;
        }
        while self.bytes + body.len() > self.max_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
        self.bytes += body.len();
        self.order.push_back(digest);
        self.bodies.insert(digest, (body, now));
    }

    /// The body with `digest`, if held.
    pub fn get(&self, digest: &BodyDigest) -> Option<Arc<Vec<u8>>> {
        self.bodies.get(digest).map(|(body, _)| body.clone())
    }

    /// Drops bodies older than the maximum age.
    pub fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let expired = self
                .bodies
                .get(oldest)
                .is_none_or(|(_, at)| now.saturating_duration_since(*at) > self.max_age);
            if !expired || !self.evict_oldest() {
                break;
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(oldest) = self.order.pop_front() else {
            return false;
        };
        if let Some((body, _)) = self.bodies.remove(&oldest) {
            self.bytes -= body.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_body, encode_body};

    fn body(n: usize, fill: u8) -> Arc<Vec<u8>> {
        Arc::new(vec![fill; n])
    }

    #[test]
    fn an_announcement_stays_small() {
        let env = GossipEnvelope::announce(digest_of(b"x"), 4 << 20);
        let bytes = encode_body(&env).unwrap();
        assert!(bytes.len() <= MAX_ANNOUNCE_BYTES, "{} bytes", bytes.len());
        assert_eq!(
            decode_body::<GossipEnvelope>(&bytes, MAX_ANNOUNCE_BYTES).unwrap(),
            env
        );
    }

    #[test]
    fn a_body_must_match_size_and_digest() {
        let data = b"block".to_vec();
        let digest = digest_of(&data);
        assert_eq!(check_body(&data, &digest, 5), Ok(()));
        assert_eq!(
            check_body(&data, &digest, 6),
            Err(BodyError::WrongSize {
                got: 5,
                announced: 6
            })
        );
        assert_eq!(
            check_body(b"blocc", &digest, 5),
            Err(BodyError::WrongDigest)
        );
    }

    #[test]
    fn announcements_with_bad_fields_are_refused() {
        assert_eq!(
            check_announcement(&[0; 31], 1, 10),
            Err(BodyError::BadDigest(31))
        );
        assert_eq!(
            check_announcement(&[0; 32], 11, 10),
            Err(BodyError::TooLarge {
                size: 11,
                limit: 10
            })
        );
        assert_eq!(check_announcement(&[7; 32], 10, 10), Ok([7; 32]));
    }

    #[test]
    fn the_store_evicts_oldest_first_to_stay_within_its_bytes() {
        let mut store = BodyStore::new(250, Duration::from_secs(60));
        let now = Instant::now();
        store.insert([1; 32], body(100, 1), now);
        store.insert([2; 32], body(100, 2), now);
        store.insert([3; 32], body(100, 3), now);
        assert!(store.get(&[1; 32]).is_none());
        assert!(store.get(&[2; 32]).is_some());
        assert!(store.get(&[3; 32]).is_some());
        assert_eq!(store.bytes(), 200);
        // A body larger than the whole store is not kept.
        store.insert([4; 32], body(300, 4), now);
        assert!(store.get(&[4; 32]).is_none());
        assert_eq!(store.bytes(), 200);
    }

    #[test]
    fn the_store_forgets_old_bodies() {
        let mut store = BodyStore::new(1000, Duration::from_secs(10));
        let now = Instant::now();
        store.insert([1; 32], body(10, 1), now);
        store.insert([2; 32], body(10, 2), now + Duration::from_secs(5));
        store.expire(now + Duration::from_secs(11));
        assert!(store.get(&[1; 32]).is_none());
        assert!(store.get(&[2; 32]).is_some());
        assert_eq!(store.bytes(), 10);
    }
}
