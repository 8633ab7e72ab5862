//! The one bounded codec of every Tenure wire and disk message: serde + CBOR, with the
//! size checked before a byte is decoded and the version checked after.
//!
//! Every message type carries a `version` field and implements [`Versioned`]; a
//! message of another version is refused with [`CodecError::UnsupportedVersion`].
//! Encoding returns an error rather than empty bytes, so nothing ever hashes or
//! sends the encoding of a failure.
//!
//! This file is compiled into each library crate (`overlay`, `stackerdb`,
//! `frost-fed`, `chain`) from this one source, by path: the crates are independent by
//! design (the chain rules must not pull in libp2p, the Stacker DB must not depend on
//! the federation), and the workspace has no crate beneath them all.

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes are not a message, or a message could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Longer than the protocol allows; nothing was decoded.
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        limit: usize,
    },
    /// Not CBOR of the expected message.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// A version this build does not speak.
    #[error("unsupported message version {found}, this build speaks {supported}")]
    UnsupportedVersion {
        /// The message's version.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// Serialising failed (these types serialise into memory; kept as an error so a
    /// failure is never mistaken for a message).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// A message type that carries its version.
pub trait Versioned {
    /// The version this build writes and accepts.
    const VERSION: u16;
    /// The version the message carries.
    fn version(&self) -> u16;
}

/// Encodes `msg` as CBOR.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    serde_cbor::to_vec(msg).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a message of at most `limit` bytes and of this build's version.
pub fn decode<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let msg: T =
        serde_cbor::from_slice(bytes).map_err(|e| CodecError::Undecodable(e.to_string()))?;
    if msg.version() != T::VERSION {
        return Err(CodecError::UnsupportedVersion {
            found: msg.version(),
            supported: T::VERSION,
        });
    }
    Ok(msg)
}
