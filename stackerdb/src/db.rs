//! Naming a Stacker DB.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest DB id, in bytes (the overlay's hello carries the same bound).
pub const MAX_DB_ID_BYTES: usize = 128;

/// The id of one Stacker DB: printable ASCII without spaces, 1 to 128 bytes, such as
/// the SIP's contract names (`SP000000000000000000002Q6VF78.block-producers`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DbId(String);

impl DbId {
    /// Checks and wraps a DB id.
    pub fn new(id: impl Into<String>) -> Result<Self, DbIdError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_DB_ID_BYTES {
            return Err(DbIdError::Length(id.len()));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DbIdError::Character);
        }
        Ok(DbId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DbId {
    type Error = DbIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DbId::new(s)
    }
}

impl From<DbId> for String {
    fn from(id: DbId) -> String {
        id.0
    }
}

/// Why a DB id was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DbIdError {
    /// Empty or longer than 128 bytes.
    #[error("db id must be 1 to {MAX_DB_ID_BYTES} bytes, got {0}")]
    Length(usize),
    /// A space, a control character or non-ASCII.
    #[error("db id may hold only printable ASCII without spaces")]
    Character,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_are_valid_ids() {
        assert!(DbId::new("SP000000000000000000002Q6VF78.pox-5").is_ok());
    }

    #[test]
    fn empty_long_and_spaced_ids_are_refused() {
        assert_eq!(DbId::new(""), Err(DbIdError::Length(0)));
        assert_eq!(DbId::new("x".repeat(129)), Err(DbIdError::Length(129)));
        assert_eq!(DbId::new("a b"), Err(DbIdError::Character));
    }
}
