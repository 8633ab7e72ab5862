//! The `tenure` binary as a user runs it: separate processes on loopback.

// Test code: a failed expectation is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use common::{DEADLINE, NodeProcess, TENURE};

fn peers_of(http: &str) -> Vec<String> {
    let Ok(response) = ureq::get(&format!("http://{http}/v1/status")).call() else {
        return Vec::new();
    };
    let status: serde_json::Value = response.into_json().unwrap();
    status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_node_processes_on_loopback_find_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::start(dir.path(), "a", &[], "");
    let a_info = a.info();
    let a_addr = a_info["listen_addrs"][0].as_str().unwrap().to_owned();
    let mut b = NodeProcess::start(dir.path(), "b", &[a_addr], "");
    let b_info = b.info();

    let a_id = a_info["peer_id"].as_str().unwrap();
    let b_id = b_info["peer_id"].as_str().unwrap();
    let a_http = a_info["http"].as_str().unwrap();
    let b_http = b_info["http"].as_str().unwrap();
    let started = Instant::now();
    while !(peers_of(a_http).iter().any(|p| p == b_id)
        && peers_of(b_http).iter().any(|p| p == a_id))
    {
        assert!(
            started.elapsed() < DEADLINE,
            "the two nodes never saw each other"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let metrics = ureq::get(&format!("http://{a_http}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("tenure_overlay_peers_connected 1"),
        "{metrics}"
    );
}

/// Runs `tenure node` on a config holding `text`, expects it to fail, returns stderr.
fn node_refusing(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(TENURE)
        .args(["node", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_config_with_a_missing_field_fails_with_one_line_naming_it() {
    let stderr = node_refusing(
        "listen_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\ndata_dir = \"d\"\nkey_file = \"k\"\n",
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("network_id"), "{stderr}");
}

#[test]
fn a_missing_key_file_says_how_to_make_one() {
    let stderr = node_refusing(
        "network_id = \"t\"\nlisten_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\ndata_dir = \"d\"\nkey_file = \"missing.key\"\n",
    );
    assert!(stderr.contains("tenure keygen"), "{stderr}");
}

/// The testnets run one at a time: two producer sets at once on a 2-core machine, in
/// debug builds, starve each other's timers.
static TESTNET: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_testnet_enrolls_on_the_burnchain_and_produces_blocks_term_after_term() {
    let _one = TESTNET.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(TENURE)
        .args([
            "testnet",
            "--nodes",
            "5",
            "--terms",
            "2",
            "--burn-interval-ms",
            "800",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "testnet failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["nodes"], 5);
    assert_eq!(summary["fully_meshed"], true, "{summary}");
    assert!(summary["heartbeats_received"].as_u64().unwrap() > 0);
    // The first node mined the regtest burnchain and every node followed it.
    assert!(summary["burn_blocks"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["burn_tip_nodes"], 5, "{summary}");
    // Both terms were chosen from enrollments on the burnchain, made their key and
    // produced signed blocks of transfers, and every producer ended on the same tip.
    assert_eq!(summary["terms_completed"], 2, "{summary}");
    let terms = summary["terms"].as_array().unwrap();
    for term in terms {
        assert!(term["blocks"].as_u64().unwrap() >= 1, "{summary}");
        assert!(term["dkg_ms"].is_u64(), "{summary}");
        let shares: u64 = term["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .sum();
        assert_eq!(shares, 100, "{summary}");
    }
    // The group announced its blocks on the burnchain, spending each term's UTXO.
    assert!(
        summary["announcements_confirmed"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    assert!(summary["final_height"].as_u64().unwrap() >= 1, "{summary}");
    // The producers' spends change from term to term, and so do their shares.
    assert_ne!(terms[0]["shares"], terms[1]["shares"], "{summary}");
    assert!(summary["blocks"].as_u64().unwrap() >= 2, "{summary}");
    assert!(summary["transactions"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["tips_agree"], true, "{summary}");
    assert!(summary["last_block_signer_shares"].as_u64().unwrap() >= 67);
    // The miner's node produces nothing: it accepted both terms' keys from the
    // producers' certificates alone and validated every block to the same tip.
    let follower = &summary["follower"];
    assert_eq!(follower["agrees"], true, "{summary}");
    assert_eq!(follower["height"], summary["blocks"], "{summary}");
    let certified = follower["terms_certified"].as_array().unwrap();
    assert!(
        certified.contains(&3.into()) && certified.contains(&4.into()),
        "{summary}"
    );
    assert_eq!(follower["refused_blocks"], 0, "{summary}");
    assert_eq!(follower["refused_certificates"], 0, "{summary}");
    assert!(
        stderr.contains("term 3 height") && stderr.contains("term 4 height"),
        "no production progress: {stderr}"
    );
    assert!(
        stderr.contains("(term 1) on"),
        "no burnchain progress: {stderr}"
    );
    assert!(
        stderr.contains("term 4 key made"),
        "no key progress: {stderr}"
    );
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_stops_the_testnet_cleanly_with_a_summary() {
    let _one = TESTNET.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(TENURE)
        .args(["testnet", "--nodes", "3", "--duration", "600", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    send_signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(summary["duration_s"].as_f64().unwrap() < 60.0);
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), "solo", &[], "");
    node.info();
    send_signal(&node.child, "-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "node ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!node.data_dir.join("node.json").exists());
}

#[test]
fn the_testnet_replaces_a_killed_leader_and_production_goes_on() {
    let (summary, stderr) = testnet_with_fault(8, "--kill-leader");
    assert!(summary["leader_killed"].is_u64(), "{summary}");
    assert!(
        summary["failover_ms"].is_u64(),
        "no block after the kill: {summary}"
    );
    assert_eq!(summary["tips_agree"], true, "{summary}");
    assert!(stderr.contains("killing the leader"), "{stderr}");
}

#[test]
fn a_byzantine_leader_gets_nothing_signed_is_named_and_production_goes_on() {
    let (summary, stderr) = testnet_with_fault(6, "--byzantine");
    let byzantine = &summary["byzantine"];
    assert!(
        byzantine["invalid_proposals"].as_u64() >= Some(1),
        "{summary}"
    );
    assert_eq!(byzantine["invalid_proposals_signed"], 0, "{summary}");
    // Honest producers deposed it (each that saw its proposal), and signing named its
    // invalid shares.
    assert!(byzantine["deposed_by"].as_u64() >= Some(1), "{summary}");
    assert!(byzantine["named_cheater"].as_u64() >= Some(1), "{summary}");
    assert!(byzantine["blocks_after"].as_u64() >= Some(1), "{summary}");
    assert_eq!(summary["tips_agree"], true, "{summary}");
    assert!(stderr.contains("turns byzantine"), "{stderr}");
}

#[test]
fn a_producer_cut_off_for_most_of_a_term_rejoins_and_catches_up() {
    let (summary, stderr) = testnet_with_fault(6, "--partition");
    let partition = &summary["partition"];
    assert!(partition["cut_off_s"].as_f64() >= Some(5.0), "{summary}");
    assert!(partition["blocks_missed"].as_u64() >= Some(1), "{summary}");
    assert!(partition["caught_up_ms"].is_u64(), "{summary}");
    assert_eq!(summary["tips_agree"], true, "{summary}");
    assert!(stderr.contains("cutting node"), "{stderr}");
}

/// Runs a two-term testnet of `nodes` with one fault flag; its JSON summary and stderr.
fn testnet_with_fault(nodes: usize, fault: &str) -> (serde_json::Value, String) {
    let _one = TESTNET.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = nodes.to_string();
    let out = Command::new(TENURE)
        .args([
            "testnet",
            "--nodes",
            &nodes,
            "--terms",
            "2",
            "--burn-interval-ms",
            "1200",
            fault,
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "testnet failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn tenure_ok(args: &[&str]) -> String {
    let out = Command::new(TENURE).args(args).output().unwrap();
    assert!(out.status.success(), "tenure {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn balance_of(http: &str, account: &str) -> u64 {
    let out = Command::new(TENURE)
        .args(["tx", "balance", "--node", http, "--account", account])
        .output()
        .unwrap();
    if !out.status.success() {
        return 0;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["balance"].as_u64().unwrap()
}

fn wait_for_balance(http: &str, account: &str, at_least: u64) {
    let started = Instant::now();
    while balance_of(http, account) < at_least {
        assert!(
            started.elapsed() < DEADLINE,
            "{account} never held {at_least}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_key_of_ones_own_is_funded_sends_a_transfer_and_sees_balances_over_the_chain_api() {
    let _one = TESTNET.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, bob_key) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    for key in [&alice_key, &bob_key] {
        tenure_ok(&["stackerdb", "keygen", "--out", key.to_str().unwrap()]);
    }
    let alice = tenure_ok(&["tx", "account", "--key", alice_key.to_str().unwrap()]);
    let bob = tenure_ok(&["tx", "account", "--key", bob_key.to_str().unwrap()]);
    let mut testnet = Command::new(TENURE)
        .args([
            "testnet",
            "--nodes",
            "4",
            "--terms",
            "3",
            "--burn-interval-ms",
            "800",
            "--http",
            "127.0.0.1:0",
            "--faucet",
            &alice,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = testnet.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let http = loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .expect("the testnet never said where its chain API is");
        if let Some((_, addr)) = line.split_once("chain HTTP API on http://") {
            break addr.split_whitespace().next().unwrap().to_owned();
        }
    };

    // The faucet pays Alice once blocks come; Alice pays Bob with her own key.
    wait_for_balance(&http, &alice, 1_000_000);
    let sent = tenure_ok(&[
        "tx",
        "send",
        "--node",
        &http,
        "--key",
        alice_key.to_str().unwrap(),
        "--to",
        &bob,
        "--amount",
        "12345",
        "--fee",
        "7",
    ]);
    assert!(sent.contains("txid"), "{sent}");
    wait_for_balance(&http, &bob, 12_345);
    assert_eq!(balance_of(&http, &alice), 1_000_000 - 12_345 - 7);

    // Bob cannot send more than he holds: refused at once, with the reason.
    let out = Command::new(TENURE)
        .args([
            "tx",
            "send",
            "--node",
            &http,
            "--key",
            bob_key.to_str().unwrap(),
            "--to",
            &alice,
            "--amount",
            "1000000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("balance"),
        "{stderr}"
    );

    let _ = testnet.kill();
    let _ = testnet.wait();
}
