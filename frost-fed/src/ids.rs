//! Identifiers that cross the federation's APIs: 32-byte hashes with a name, so a
//! session id cannot be passed where a request id is expected. On the wire and on
//! disk each is its 32 bytes, as before.

use serde::{Deserialize, Serialize};

/// Declares a 32-byte identifier type.
macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub [u8; 32]);

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl From<[u8; 32]> for $name {
            fn from(bytes: [u8; 32]) -> $name {
                $name(bytes)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for byte in self.0.iter().take(6) {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    };
}

id32! {
    /// A DKG session: the hash of the application's context, the roster and the
    /// attempt ([`crate::dkg::session_id`]).
    SessionId
}

id32! {
    /// A signing request: the hash of the key and the payload
    /// ([`crate::sign::request_id`]).
    RequestId
}

id32! {
    /// An echo broadcast's tag: unique per sender and purpose.
    BroadcastTag
}
