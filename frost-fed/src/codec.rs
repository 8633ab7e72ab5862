//! The one encoding of every message the federation sends: CBOR, with its size
//! checked before decoding and its version after.

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than allowed.
    #[error("message of {len} bytes exceeds {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        limit: usize,
    },
    /// Not CBOR of the expected message.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// Another version.
    #[error("message version {0} is not spoken here")]
    Version(u16),
}

/// A message that carries its version.
pub trait Versioned {
    /// The version this build speaks.
    const VERSION: u16;
    /// The message's own version.
    fn version(&self) -> u16;
}

/// Encodes a message (serialising these types into memory cannot fail).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_cbor::to_vec(msg).unwrap_or_default()
}

/// Decodes a message of at most `limit` bytes and this build's version.
pub fn decode<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let msg: T =
        serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
    if msg.version() != T::VERSION {
        return Err(DecodeError::Version(msg.version()));
    }
    Ok(msg)
}
