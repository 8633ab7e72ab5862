//! Making sled's files durable, which sled 0.34.7 does not do on its own.
//!
//! What sled's `flush` does on Linux (read from its source, `pagecache/iobuf.rs`): each
//! buffered stretch of the log is written with `pwrite`, then
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` waits until those pages were
//! handed to the device. That is not durability: `sync_file_range` flushes neither the
//! file's metadata (the log growing) nor the device's volatile cache, and where the file
//! system cannot see it (FUSE, for one) it does nothing at all. sled calls `fsync` only
//! from its background flusher (every 500 ms by default), when a log segment is
//! truncated, and for snapshots. It never syncs its `conf` file, nor the files it writes
//! values larger than a quarter segment (128 KiB) to (`blobs/`), nor any directory.
//!
//! Shown, not assumed: on a file system that keeps only what `fsync` covered
//! (`tenure_tests::lossy_fs`), 400 chunks acknowledged by sled's `flush` alone were
//! all lost at a power cut (`tests/power_loss.rs`).
//!
//! So the store (and the chain store and the federation's key store, which use this
//! module too) syncs what sled leaves out: at open, the store's directory, its parent
//! and the `conf` file; after every flush, the log file (`db`, by `fdatasync`, which
//! covers its growth) and every blob file not yet synced, then the blob directory. An
//! acknowledged write is then on the device, through its cache, for any file system
//! that honours `fsync`.
//!
//! One limit remains, inside sled: a value over the blob threshold lives in a file of
//! its own, and sled removes the blob a newer value replaced once the log segment
//! recording the replacement is written, before any `fsync`. A power cut in that window
//! can lose an acknowledged **large** value (over 128 KiB). Stacker DB chunks are 4 KiB
//! by default (1 MiB at most); chain blocks can be larger. Tested only for values
//! under the threshold.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

/// sled's log file, kept open for syncing, and the blobs already synced with the
/// length they had (a blob sled was still writing is synced again once it grew).
#[derive(Debug)]
pub struct DiskSync {
    dir: PathBuf,
    log: File,
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

/// A failed sync, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("syncing {path} to disk failed: {source}")]
pub struct SyncError {
    /// The file or directory.
    pub path: PathBuf,
    /// What the operating system said.
    pub source: io::Error,
}

fn sync_path(path: &Path) -> Result<(), SyncError> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|source| SyncError {
            path: path.to_owned(),
            source,
        })
}

impl DiskSync {
    /// Syncs what sled created in `dir` (a sled database just opened there), and keeps its
    /// log open for later syncs.
    pub fn open(dir: &Path) -> Result<DiskSync, SyncError> {
        let log_path = dir.join("db");
        let log = File::open(&log_path).map_err(|source| SyncError {
            path: log_path,
            source,
        })?;
        sync_path(&dir.join("conf"))?;
        // Recovery may have removed blob files: make their removal durable too.
        if dir.join("blobs").is_dir() {
            sync_path(&dir.join("blobs"))?;
        }
        sync_path(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(DiskSync {
            dir: dir.to_owned(),
            log,
            synced_blobs: Mutex::new(HashMap::new()),
        })
    }

    /// Makes what sled's flush wrote durable. Call after every `sled::Db::flush`.
    pub fn sync(&self) -> Result<(), SyncError> {
        self.log.sync_data().map_err(|source| SyncError {
            path: self.dir.join("db"),
            source,
        })?;
        self.sync_blobs()
    }

    fn sync_blobs(&self) -> Result<(), SyncError> {
        let blobs = self.dir.join("blobs");
        let listing = match std::fs::read_dir(&blobs) {
            Ok(listing) => listing,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(SyncError {
                    path: blobs,
                    source,
                });
            }
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashMap::new();
        let mut new = false;
        for entry in listing {
            let (name, len) = match entry.and_then(|e| Ok((e.file_name(), e.metadata()?.len()))) {
                Ok(found) => found,
                // sled removes blobs it no longer needs while we look.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(SyncError {
                        path: blobs.clone(),
                        source,
                    });
                }
            };
            if synced.get(&name) != Some(&len) {
                match sync_path(&blobs.join(&name)) {
                    Ok(()) => new = true,
                    Err(err) if err.source.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
            }
            present.insert(name, len);
        }
        if new {
            sync_path(&blobs)?;
        }
        // Blobs sled removed are forgotten.
        *synced = present;
        Ok(())
    }
}
