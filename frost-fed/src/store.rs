//! Key shares on disk (sled): a member that restarts keeps signing with the same key.
//!
//! Each key share is stored under its DKG session id and made durable before `put`
//! returns; the newest is also recorded as current. The format carries a version.
//!
//! Durable means synced: sled 0.34's `flush` ends in `sync_file_range`, which does not
//! survive a power cut. So after each flush the store syncs what sled leaves out, with
//! `tenure_stackerdb::disk` (which says why and what), and its power-cut test
//! (`a_stored_key_share_survives_kill_9_and_a_power_cut`) shows it.

use crate::ids::SessionId;
use std::path::Path;

use crate::share::{KeyShare, KeyShareError};
use tenure_stackerdb::disk::{DiskSync, SyncError};

/// On-disk format of the key store.
pub const KEY_STORE_FORMAT: u32 = 1;

const FORMAT_KEY: &[u8] = b"format";
const CURRENT_KEY: &[u8] = b"current";

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// sled failed.
    #[error("key store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored key share does not decode.
    #[error("stored key share: {0}")]
    Corrupt(#[from] KeyShareError),
    /// The directory could not be made or restricted to its owner.
    #[error("key store directory: {0}")]
    Directory(String),
    /// A write could not be synced to disk.
    #[error("key store: {0}")]
    Sync(#[from] SyncError),
    /// Another format.
    #[error("key store format {found} is not {KEY_STORE_FORMAT}")]
    Format {
        /// The format found.
        found: String,
    },
}

/// A member's key shares.
#[derive(Clone, Debug)]
pub struct KeyStore {
    db: sled::Db,
    keys: sled::Tree,
    /// Syncs what sled's flush leaves out.
    disk: std::sync::Arc<DiskSync>,
}

impl KeyStore {
    /// Opens (or creates) the store in `dir`, readable by its owner only (mode 0700 on
    /// Unix): it holds secret key shares.
    pub fn open(dir: &Path) -> Result<KeyStore, KeyStoreError> {
        let directory =
            |e: std::io::Error| KeyStoreError::Directory(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(directory)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(directory)?;
        }
        let db = sled::open(dir)?;
        let disk = DiskSync::open(dir)?;
        let format = KEY_STORE_FORMAT.to_be_bytes();
        match db.get(FORMAT_KEY)? {
            Some(found) if found.as_ref() != format => {
                return Err(KeyStoreError::Format {
                    found: hex::encode(found),
                });
            }
            Some(_) => {}
            None => {
                db.insert(FORMAT_KEY, &format)?;
            }
        }
        let store = KeyStore {
            keys: db.open_tree("keys")?,
            db,
            disk: std::sync::Arc::new(disk),
        };
        store.sync()?;
        Ok(store)
    }

    /// sled's flush, then the sync sled leaves out: what was written is on the disk.
    fn sync(&self) -> Result<(), KeyStoreError> {
        self.db.flush()?;
        self.disk.sync()?;
        Ok(())
    }

    /// Stores `key` durably and makes it current.
    pub fn put(&self, key: &KeyShare) -> Result<(), KeyStoreError> {
        self.keys.insert(key.session.as_ref(), key.to_bytes()?)?;
        self.db.insert(CURRENT_KEY, key.session.as_ref())?;
        self.sync()
    }

    /// The key share made by DKG session `session`.
    pub fn get(&self, session: &SessionId) -> Result<Option<KeyShare>, KeyStoreError> {
        match self.keys.get(session)? {
            Some(bytes) => Ok(Some(KeyShare::from_bytes(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The key share whose DKG transcript is `transcript` (what a term key's record
    /// names), if this member holds one: a producer that restarted takes its share of
    /// the term's key back.
    pub fn by_transcript(&self, transcript: &[u8; 32]) -> Result<Option<KeyShare>, KeyStoreError> {
        for entry in self.keys.iter().rev() {
            let (_, bytes) = entry?;
            // One share that does not decode does not hide the others.
            if let Ok(key) = KeyShare::from_bytes(&bytes)
                && key.transcript == *transcript
            {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The newest key share.
    pub fn current(&self) -> Result<Option<KeyShare>, KeyStoreError> {
        let Some(session) = self.db.get(CURRENT_KEY)? else {
            return Ok(None);
        };
        let Ok(session) = <[u8; 32]>::try_from(session.as_ref()) else {
            return Ok(None);
        };
        self.get(&SessionId(session))
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_store_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        // Even a directory made open to everyone before is closed on open.
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = KeyStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(store.current().unwrap(), None);
    }
}
