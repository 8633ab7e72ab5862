//! Changing who is in the federation.
//!
//! A join (or any change of members or weights) takes effect only when the current
//! federation's threshold signs its **agreement**, and only if that agreement
//! commits to the new roster: otherwise any threshold signature the federation ever
//! made (a block, a payout's sighash) could be paired with a roster of an attacker's
//! choosing. By default the agreement is a hash of the old and new rosters, and
//! [`admit`] recomputes it from the change. For a mining pool it is the sighash of
//! the Bitcoin transaction that moves the pool's funds (and the joiner's bond); only
//! the application can tell whether such a transaction commits to the new roster,
//! so [`admit_with`] takes its check. Either returns the roster to run the next DKG
//! for: a change of members always means a new key (FROST's refresh cannot add
//! members).
//!
//! A member that leaves or fails is dropped with [`crate::Roster::without`]; until the
//! new key exists, signing goes on with the rest while they hold the threshold.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    roster::{MemberId, Roster},
    share::KeyShare,
    sign::{RecordError, SignatureRecord},
};

/// A proposed change of roster and the message the current threshold must sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterChange {
    /// Digest of the roster it changes.
    pub from: [u8; 32],
    /// The new roster.
    pub to: Roster,
    /// The 32-byte message whose threshold signature admits the change.
    pub agreement: [u8; 32],
}

/// Why a change is not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The change is for another roster than the current key's.
    #[error("the change is for another roster")]
    WrongRoster,
    /// The record signs something other than the change's agreement.
    #[error("the signature is not on the change's agreement")]
    WrongMessage,
    /// The agreement does not commit to the new roster.
    #[error("the agreement does not commit to the new roster")]
    NotCommitted,
    /// The record does not prove a threshold signature by the current key.
    #[error("the agreement is not signed by the federation: {0}")]
    Unsigned(#[from] RecordError),
}

impl RosterChange {
    /// A change from `current` to `to` whose agreement is the hash of both rosters.
    pub fn proposal(current: &Roster, to: Roster) -> RosterChange {
        let from = current.digest();
        RosterChange {
            from,
            agreement: roster_agreement(&from, &to),
            to,
        }
    }

    /// A change whose agreement is an application's message, such as the sighash of
    /// the transaction handing the funds to the new group.
    pub fn with_agreement(current: &Roster, to: Roster, agreement: [u8; 32]) -> RosterChange {
        RosterChange {
            from: current.digest(),
            to,
            agreement,
        }
    }

    /// Members in the new roster who are not in `current`.
    pub fn joining(&self, current: &Roster) -> Vec<MemberId> {
        self.to
            .members()
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| current.index_of(m).is_none())
            .collect()
    }

    /// Members of `current` who are not in the new roster.
    pub fn leaving(&self, current: &Roster) -> Vec<MemberId> {
        current
            .members()
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| self.to.index_of(m).is_none())
            .collect()
    }
}

/// The default agreement: a hash of the old roster's digest and the new roster.
fn roster_agreement(from: &[u8; 32], to: &Roster) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tenure/frost-fed/roster-change/v1");
    h.update(from);
    h.update(to.digest());
    h.finalize().into()
}

/// Admits a [`RosterChange::proposal`]: `record` must be the current federation's
/// threshold signature on the hash of the current roster and `change.to`. Returns
/// the roster for the next DKG.
pub fn admit(
    current: &KeyShare,
    change: &RosterChange,
    record: &SignatureRecord,
) -> Result<Roster, AdmitError> {
    admit_with(current, change, record, |agreement, to| {
        *agreement == roster_agreement(&current.roster.digest(), to)
    })
}

/// Admits a change whose agreement is an application's message: `commits` says
/// whether the agreement commits to the new roster (for a pool, whether the signed
/// transaction takes the bonds of exactly the joiners), and `record` must be the
/// current federation's threshold signature on it.
pub fn admit_with(
    current: &KeyShare,
    change: &RosterChange,
    record: &SignatureRecord,
    commits: impl FnOnce(&[u8; 32], &Roster) -> bool,
) -> Result<Roster, AdmitError> {
    if change.from != current.roster.digest() {
        return Err(AdmitError::WrongRoster);
    }
    if !commits(&change.agreement, &change.to) {
        return Err(AdmitError::NotCommitted);
    }
    if record.message != change.agreement {
        return Err(AdmitError::WrongMessage);
    }
    record.verify(&current.public, &current.roster)?;
    Ok(change.to.clone())
}
