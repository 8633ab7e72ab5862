//! Stacker DBs across real node processes: a chunk written through one node's HTTP API
//! (with the `tenure stackerdb` client) is read back from every other node.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use bitcoin::secp256k1::{SECP256K1, SecretKey};
use common::{DEADLINE, NodeProcess, TENURE};
use tenure_stackerdb::{Chunk, DbId};
use tenure_tests::lossy_fs::LossyFs;

const DB: &str = "test.demo";

fn tenure(args: &[&str]) -> std::process::Output {
    Command::new(TENURE).args(args).output().unwrap()
}

fn keygen(path: &Path) -> String {
    let out = tenure(&["stackerdb", "keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn put(http: &str, slot: u32, version: u64, key: &Path, data: &Path) -> std::process::Output {
    tenure(&[
        "stackerdb",
        "put",
        "--node",
        http,
        "--db",
        DB,
        "--slot",
        &slot.to_string(),
        "--version",
        &version.to_string(),
        "--key",
        key.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
}

fn read(http: &str, slot: u32) -> serde_json::Value {
    ureq::get(&format!("http://{http}/v1/stackerdb/{DB}/{slot}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

#[test]
fn a_chunk_written_at_one_node_is_read_at_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (writer_key, intruder_key) = (
        dir.path().join("writer.key"),
        dir.path().join("intruder.key"),
    );
    let writer = keygen(&writer_key);
    keygen(&intruder_key);
    // Two slots, both written by `writer`.
    let db_config =
        format!("\n[[stackerdb]]\nid = \"{DB}\"\nslot_writers = [\"{writer}\", \"{writer}\"]\n");

    let mut a = NodeProcess::start(dir.path(), "a", &[], &db_config);
    let a_info = a.info();
    let bootstrap = vec![a_info["listen_addrs"][0].as_str().unwrap().to_owned()];
    let mut b = NodeProcess::start(dir.path(), "b", &bootstrap, &db_config);
    let mut c = NodeProcess::start(dir.path(), "c", &bootstrap, &db_config);
    let a_http = a_info["http"].as_str().unwrap().to_owned();
    let b_http = b.info()["http"].as_str().unwrap().to_owned();
    let c_http = c.info()["http"].as_str().unwrap().to_owned();

    // An unwritten slot reads as the empty chunk, version 0.
    let empty = read(&c_http, 1);
    assert_eq!(empty["chunk"], "");
    assert_eq!(empty["version"], "0x000000000000000000");

    let data = dir.path().join("chunk.bin");
    std::fs::write(&data, b"signer state, term 7").unwrap();
    let out = put(&a_http, 1, 3, &writer_key, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The chunk reaches every replica, byte for byte, with its writer.
    for http in [&b_http, &c_http] {
        let started = Instant::now();
        loop {
            let slot = read(http, 1);
            if slot["version"] == "0x000000000000000003" {
                assert_eq!(slot["chunk"], hex::encode(b"signer state, term 7"));
                assert_eq!(slot["public_key"], writer.as_str());
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the chunk never reached {http}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // An older version is refused with its reason (403), and changes nothing.
    let out = put(&b_http, 1, 2, &writer_key, &data);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("older"),
        "{stderr}"
    );
    // A key that does not own the slot is refused too.
    let out = put(&b_http, 0, 1, &intruder_key, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("may not write"),
        "{stderr}"
    );
    assert_eq!(read(&b_http, 1)["version"], "0x000000000000000003");

    // The client reads the bytes back into a file.
    let back = dir.path().join("back.bin");
    let out = tenure(&[
        "stackerdb",
        "get",
        "--node",
        &c_http,
        "--db",
        DB,
        "--slot",
        "1",
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&back).unwrap(), b"signer state, term 7");

    // Node A sees its neighbours catch up: every peer's last clock is level with its own.
    let started = Instant::now();
    loop {
        let peers: serde_json::Value =
            ureq::get(&format!("http://{a_http}/v1/stackerdb/{DB}/peers"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
        let peers = peers.as_array().unwrap();
        if peers.len() == 2 && peers.iter().all(|p| p["slots_behind"] == 0) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "peers never reported catching up: {peers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let clock: serde_json::Value = ureq::get(&format!("http://{c_http}/v1/stackerdb/{DB}/clock"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(clock["slots"][1]["version"], 3);
}

/// Acknowledged writes, recorded by a thread posting to a node until it fails.
struct Burst {
    acknowledged: Arc<Mutex<Vec<(u32, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Burst {
    /// Posts 4 KiB chunks to four slots of `DB` as fast as the node acknowledges them,
    /// recording every acknowledged (slot, version); stops at the first failure.
    fn start(http: &str, secret: SecretKey) -> Burst {
        let acknowledged: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acknowledged, stop, http) = (acknowledged.clone(), stop.clone(), http.to_owned());
            std::thread::spawn(move || {
                let db = DbId::new(DB).unwrap();
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (slot, version) = ((n % 4) as u32, n / 4 + 1);
                    let data = vec![(n % 251) as u8; 4096];
                    let chunk = Chunk::sign("cli-test", &db, slot, version, data, &secret);
                    let body = serde_json::json!({
                        "slot": slot,
                        "version": version,
                        "data": hex::encode(&chunk.data),
                        "signature": hex::encode(&chunk.signature),
                    });
                    match ureq::post(&format!("http://{http}/v1/stackerdb/{DB}")).send_json(body) {
                        Ok(_) => acknowledged.lock().unwrap().push((slot, version)),
                        Err(_) => break,
                    }
                }
            })
        };
        Burst {
            acknowledged,
            stop,
            thread,
        }
    }

    /// Waits until `count` writes were acknowledged.
    fn wait_for(&self, count: usize) {
        let started = Instant::now();
        while self.acknowledged.lock().unwrap().len() < count {
            assert!(started.elapsed() < DEADLINE, "the burst never got going");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the burst; every write it saw acknowledged.
    fn finish(self) -> Vec<(u32, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.acknowledged.lock().unwrap().clone()
    }
}

/// Every slot holds at least the newest version acknowledged for it.
fn assert_holds_every_acknowledged_write(http: &str, acknowledged: &[(u32, u64)]) {
    for slot in 0..4u32 {
        let newest = acknowledged
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, v)| *v)
            .max()
            .unwrap();
        let got = read(http, slot)["version"].as_str().unwrap().to_owned();
        let version = u64::from_str_radix(got.trim_start_matches("0x00"), 16).unwrap();
        assert!(
            version >= newest,
            "slot {slot}: acknowledged version {newest} but the restarted node holds {version}"
        );
    }
}

fn one_writer_db() -> (SecretKey, String) {
    let secret = SecretKey::from_slice(&[7; 32]).unwrap();
    let writer = hex::encode(secret.public_key(SECP256K1).serialize());
    let writers = vec![format!("\"{writer}\""); 4].join(", ");
    (
        secret,
        format!("\n[[stackerdb]]\nid = \"{DB}\"\nslot_writers = [{writers}]\n"),
    )
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, db_config) = one_writer_db();
    let mut node = NodeProcess::start(dir.path(), "crash", &[], &db_config);
    let http = node.info()["http"].as_str().unwrap().to_owned();

    // Let the burst run, then kill the node mid-write.
    let burst = Burst::start(&http, secret);
    burst.wait_for(200);
    node.kill_and_restart();
    let acknowledged = burst.finish();

    // After the restart every slot holds at least the last version acknowledged for it.
    let http = node.info()["http"].as_str().unwrap().to_owned();
    assert_holds_every_acknowledged_write(&http, &acknowledged);
}

/// The node's data directory is on a file system that keeps only what `fsync` covered;
/// the power is cut in the middle of a write burst and the node killed. What was
/// acknowledged over HTTP must be on the disk the node restarts from.
#[test]
fn a_power_cut_during_a_write_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("cut");
    std::fs::create_dir(&data_dir).unwrap();
    let fs =
        LossyFs::mount(&data_dir).expect("mounting the lossy file system needs /dev/fuse and root");
    let (secret, db_config) = one_writer_db();
    let mut node = NodeProcess::start(dir.path(), "cut", &[], &db_config);
    let http = node.info()["http"].as_str().unwrap().to_owned();

    let burst = Burst::start(&http, secret);
    burst.wait_for(200);
    let image = fs.power_off();
    node.kill();
    let acknowledged = burst.finish();
    fs.unmount().unwrap();

    // The machine comes back with what was durable, and the node starts on it.
    image.restore_to(&data_dir).unwrap();
    node.restart();
    let http = node.info()["http"].as_str().unwrap().to_owned();
    assert_holds_every_acknowledged_write(&http, &acknowledged);
}
