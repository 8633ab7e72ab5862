//! The lossy file system itself: what `fsync` covered survives its power cut, nothing
//! else does, and nothing works after it. The Stacker DB's power-loss test relies on it.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{fs::OpenOptions, io::Write, path::PathBuf};

use tenure_tests::lossy_fs::LossyFs;

#[test]
fn only_what_fsync_covered_survives_the_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let fs = LossyFs::mount(&mount).expect("mounting needs /dev/fuse and root");

    std::fs::create_dir(mount.join("sub")).unwrap();
    let mut synced = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(mount.join("sub/synced"))
        .unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b" and lost").unwrap();
    assert_eq!(
        std::fs::read(mount.join("sub/synced")).unwrap(),
        b"durable and lost"
    );
    std::fs::write(mount.join("never-synced"), b"lost").unwrap();
    std::fs::write(mount.join("renamed.tmp"), b"kept").unwrap();
    OpenOptions::new()
        .write(true)
        .open(mount.join("renamed.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    std::fs::rename(mount.join("renamed.tmp"), mount.join("renamed")).unwrap();
    assert_eq!(fs.fsyncs(), 2);

    let image = fs.power_off();
    let err = std::fs::write(mount.join("after"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "not EIO after the cut: {err}");
    drop(synced);
    fs.unmount().unwrap();

    let mut entries = image.entries.clone();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            (PathBuf::from("never-synced"), Some(Vec::new())),
            (PathBuf::from("renamed"), Some(b"kept".to_vec())),
            (PathBuf::from("sub"), None),
            (PathBuf::from("sub/synced"), Some(b"durable".to_vec())),
        ]
    );
    let restored = dir.path().join("restored");
    image.restore_to(&restored).unwrap();
    assert_eq!(
        std::fs::read(restored.join("sub/synced")).unwrap(),
        b"durable"
    );
}
