//! `tenure node` processes on one embedded regtest burnchain: one mines it (its
//! premine pays the producers' wallets), three enroll as producers with the spends
//! their configs name. Their enrollments reach the miner by gossip, and every node's
//! scan chooses the same producers, weighted by spend. One producer is killed with
//! SIGKILL and restarted: it catches up with the burnchain and keeps enrolling, and
//! the producers chosen after the restart include it again.
//!
//! The same processes produce blocks: the producers find each other from their
//! contacts, make each term's key, and sign blocks; the miner's node follows the chain
//! from the key certificates. The producer with the fewest shares is killed with
//! SIGKILL mid-term: the two others (above the 67 shares) go on producing. Restarted,
//! it resumes at its chain store's tip, takes the keys of the terms it missed from
//! the others' proofs, catches up with the blocks made without it, is chosen again and
//! takes part in the terms' keys, and production goes on with it on the same tip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, SECP256K1};
use common::{NodeProcess, TENURE};

/// Term 0's first burn block: the premine (103 blocks) pays the three producers in
/// turn and their coinbases mature first.
const FIRST_TERM_HEIGHT: u64 = 104;

/// How long the whole run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// Writes a producer key with `tenure keygen`; its x-only key, hex.
fn producer_key(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}-producer.key"));
    let out = std::process::Command::new(TENURE)
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen failed: {out:?}");
    let secret = hex::decode(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
    let keypair = Keypair::from_seckey_slice(SECP256K1, &secret).unwrap();
    keypair.x_only_public_key().0.to_string()
}

/// The node's burnchain status, if it answers.
fn burn_status(node: &mut NodeProcess) -> Option<serde_json::Value> {
    Some(status(node)?["burn"].clone())
}

/// The node's `/v1/status`, if it answers.
fn status(node: &mut NodeProcess) -> Option<serde_json::Value> {
    let http = node.info()["http"].as_str()?.to_owned();
    ureq::get(&format!("http://{http}/v1/status"))
        .call()
        .ok()?
        .into_json()
        .ok()
}

/// `GET /v1/blocks/{id}` of the node: the status and the JSON.
fn block(node: &mut NodeProcess, id: &str) -> (u16, serde_json::Value) {
    let http = node.info()["http"].as_str().unwrap().to_owned();
    match ureq::get(&format!("http://{http}/v1/blocks/{id}")).call() {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or_default()),
        Err(e) => panic!("GET /v1/blocks/{id}: {e}"),
    }
}

/// The term key certificates in the node's producer DB signer slots (0–99), with the
/// term of each.
fn producer_db_certificates(node: &mut NodeProcess) -> Vec<(u32, u64, String)> {
    use tenure_chain::produce::{producer_db::PRODUCER_DB, term_key::KeyCertificate};
    let http = node.info()["http"].as_str().unwrap().to_owned();
    let mut found = Vec::new();
    for slot in 0..100u32 {
        let Ok(reply) =
            ureq::get(&format!("http://{http}/v1/stackerdb/{PRODUCER_DB}/{slot}")).call()
        else {
            continue;
        };
        let value: serde_json::Value = reply.into_json().unwrap();
        let Some(bytes) = value["chunk"].as_str().and_then(|h| hex::decode(h).ok()) else {
            continue;
        };
        if let Ok(certificate) = KeyCertificate::from_bytes(&bytes) {
            certificate
                .check_signature("cli-test")
                .expect("a certificate in the producer DB verifies");
            found.push((
                slot,
                certificate.record.term,
                certificate.member.to_string(),
            ));
        }
    }
    found
}

/// A miner (a burn block every `interval_ms` from term 2 on) and three producers
/// (spends 3, 4 and 5 units) on loopback.
fn start_network(dir: &Path, interval_ms: u64) -> (Vec<String>, NodeProcess, Vec<NodeProcess>) {
    let keys: Vec<String> = (0..3)
        .map(|i| producer_key(dir, &format!("p{i}")))
        .collect();
    let premine = keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let burnchain = format!("\n[burnchain]\nfirst_term_height = {FIRST_TERM_HEIGHT}\n");
    let mut miner = NodeProcess::start(
        dir,
        "miner",
        &[],
        &format!("{burnchain}mine_interval_ms = {interval_ms}\npremine_to = [{premine}]\n"),
    );
    let bootstrap = miner.info()["listen_addrs"][0].as_str().unwrap().to_owned()
        + "/p2p/"
        + miner.info()["peer_id"].as_str().unwrap();
    let producers = (0..3)
        .map(|i| {
            NodeProcess::start(
                dir,
                &format!("p{i}"),
                std::slice::from_ref(&bootstrap),
                &format!(
                    "{burnchain}\n[producer]\nkey_file = \"p{i}-producer.key\"\nspend_sat = {}\n",
                    100_000 * (3 + i)
                ),
            )
        })
        .collect();
    (keys, miner, producers)
}

/// The keys of the producers `burn` shows for the current term, with their shares.
fn producers(burn: &serde_json::Value) -> Vec<(String, u64)> {
    burn["producers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["key"].as_str().unwrap_or_default().to_owned(),
                        p["shares"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every node's status satisfies `done`; returns their statuses.
fn wait_all(
    nodes: &mut [&mut NodeProcess],
    started: Instant,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    loop {
        let statuses: Vec<serde_json::Value> = nodes
            .iter_mut()
            .map(|n| burn_status(n).unwrap_or_default())
            .collect();
        if statuses.iter().all(&done) {
            return statuses;
        }
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "never: {what}; statuses {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn producer_processes_enroll_on_the_miners_burnchain_and_one_killed_with_sigkill_enrolls_again() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, mut miner, mut producers_nodes) = start_network(dir.path(), 300);
    let started = Instant::now();

    // Term 3's producers are the three, chosen alike everywhere, the heaviest spend
    // with the most shares.
    let statuses = {
        let mut all: Vec<&mut NodeProcess> = std::iter::once(&mut miner)
            .chain(producers_nodes.iter_mut())
            .collect();
        wait_all(&mut all, started, "term 3 with three producers", |b| {
            b["term"].as_u64() >= Some(3) && producers(b).len() == 3
        })
    };
    let chosen = producers(&statuses[0]);
    let mut chosen_keys: Vec<&String> = chosen.iter().map(|(k, _)| k).collect();
    chosen_keys.sort();
    let mut expected: Vec<&String> = keys.iter().collect();
    expected.sort();
    assert_eq!(chosen_keys, expected, "{statuses:?}");
    assert_eq!(chosen.iter().map(|(_, s)| s).sum::<u64>(), 100);
    // p2 spent the most: it leads with the most shares.
    assert_eq!(chosen[0].0, keys[2], "{chosen:?}");
    assert!(chosen[0].1 > chosen[2].1, "{chosen:?}");

    // SIGKILL p1 and start it again on its data: it catches up and enrolls again.
    let term_killed = statuses[0]["term"].as_u64().unwrap();
    producers_nodes[1].kill_and_restart();
    let restarted_at = Instant::now();
    let later = term_killed + 3;
    let statuses = {
        let mut all: Vec<&mut NodeProcess> = std::iter::once(&mut miner)
            .chain(producers_nodes.iter_mut())
            .collect();
        wait_all(
            &mut all,
            started,
            "a term after the restart with three producers",
            |b| {
                b["term"].as_u64() >= Some(later)
                    && producers(b).iter().any(|(k, _)| *k == keys[1])
                    && producers(b).len() == 3
            },
        )
    };
    assert_eq!(statuses.len(), 4);
    eprintln!(
        "term {later} reached {:.1} s after the restart; {:.1} s in all",
        restarted_at.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Every node's chain status (`height`, `tip`, `role`), once all answer.
fn chains(nodes: &mut [&mut NodeProcess]) -> Vec<serde_json::Value> {
    nodes
        .iter_mut()
        .map(|n| status(n).map(|s| s["chain"].clone()).unwrap_or_default())
        .collect()
}

/// Waits until the nodes' chains satisfy `done`.
fn wait_chains(
    nodes: &mut [&mut NodeProcess],
    started: Instant,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    loop {
        let chains = chains(nodes);
        if done(&chains) {
            return chains;
        }
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "never: {what}; chains {chains:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn height(chain: &serde_json::Value) -> u64 {
    chain["height"].as_u64().unwrap_or(0)
}

#[test]
fn producer_processes_produce_blocks_and_go_on_when_one_is_killed_with_sigkill_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    // Terms of 15 s: a term's DKG with a member killed waits 10 s for it before it
    // blames it and tries again without it, and must end before the term starts.
    let (keys, mut miner, mut producers) = start_network(dir.path(), 1_500);
    let started = Instant::now();

    // Blocks from term 3 on, at every producer and at the miner's follower alike.
    let chains = {
        let mut all: Vec<&mut NodeProcess> = std::iter::once(&mut miner)
            .chain(producers.iter_mut())
            .collect();
        wait_chains(&mut all, started, "blocks everywhere on one tip", |c| {
            height(&c[0]) >= 2 && c.iter().all(|x| x["tip"] == c[0]["tip"])
        })
    };
    assert_eq!(chains[0]["role"], "follower");
    assert!(
        chains[1..].iter().any(|c| c["leader"].is_string()),
        "no producer names its leader: {chains:?}"
    );
    assert!(
        chains[1..].iter().all(|c| c["role"] == "producer"),
        "{chains:?}"
    );

    // p0 spent least: fewest shares, the two others hold more than 67. SIGKILL it.
    let term_killed = burn_status(&mut producers[1]).unwrap()["term"]
        .as_u64()
        .unwrap();
    producers[0].kill();
    let killed_at = height(&chains[1]);
    let killed = Instant::now();
    {
        let mut rest: Vec<&mut NodeProcess> = producers.iter_mut().skip(1).collect();
        wait_chains(&mut rest, started, "blocks without p0", |c| {
            c.iter().all(|x| height(x) > killed_at + 1)
        });
    }
    eprintln!(
        "two blocks without p0 {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    producers[0].restart();
    let restarted = Instant::now();
    // Chosen again from an enrollment made after the restart (in the term after the
    // kill, for the term two later), and the set it is back in produces.
    let back_in = {
        let mut all: Vec<&mut NodeProcess> = std::iter::once(&mut miner)
            .chain(producers.iter_mut())
            .collect();
        wait_all(&mut all, started, "p0 a producer of a term again", |b| {
            b["term"].as_u64() >= Some(term_killed + 3)
                && crate::producers(b).iter().any(|(k, _)| *k == keys[0])
        })
    };
    let term_back = back_in[0]["term"].as_u64().unwrap();
    let resumed_at = {
        let mut all: Vec<&mut NodeProcess> = vec![&mut miner, &mut producers[1]];
        let c = crate::chains(&mut all);
        height(&c[1])
    };
    // Every node on one tip, p0 included: it caught up with the blocks made while
    // it was down (in terms whose keys it took from proofs) and produces with the
    // others.
    let chains = {
        let mut all: Vec<&mut NodeProcess> = std::iter::once(&mut miner)
            .chain(producers.iter_mut())
            .collect();
        wait_chains(&mut all, started, "blocks with p0 back, on one tip", |c| {
            height(&c[1]) > resumed_at + 1
                && c[1]["term"].as_u64() >= Some(term_back)
                && c.iter().all(|x| x["tip"] == c[1]["tip"])
        })
    };
    assert!(height(&chains[1]) > killed_at + 1);
    // p0 serves the whole chain from its store, by height and by hash: the blocks it
    // made before the kill and those it caught up with alike, linked parent to child.
    let tip = chains[1]["tip"].as_str().unwrap().to_owned();
    let (code, top) = block(&mut producers[0], &tip);
    assert_eq!(code, 200, "{top}");
    assert_eq!(top["hash"], tip.as_str());
    let mut child = top;
    for h in (1..child["height"].as_u64().unwrap()).rev() {
        let (code, parent) = block(&mut producers[0], &h.to_string());
        assert_eq!(code, 200, "block {h}: {parent}");
        assert_eq!(child["parent"], parent["hash"], "block {h}");
        child = parent;
    }
    assert_eq!(block(&mut producers[0], &"ab".repeat(32)).0, 404);
    assert_eq!(block(&mut producers[0], "neither").0, 400);

    // The producer DB follows the terms: the miner's replica holds this term's key
    // certificates, written by the term's producers into their own signer slots under
    // the term's policy, and no certificate of a term before (collected at the term's
    // first burn block).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let term = burn_status(&mut miner).unwrap()["term"].as_u64().unwrap();
        let found = producer_db_certificates(&mut miner);
        let this_term: std::collections::BTreeSet<&String> = found
            .iter()
            .filter(|(_, t, _)| *t == term)
            .map(|(_, _, m)| m)
            .collect();
        if this_term.len() >= 2 && found.iter().all(|(_, t, _)| *t == term) {
            eprintln!(
                "producer DB: {} certificates of term {term} ({found:?})",
                this_term.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "producer DB of the miner at term {term}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "p0 chosen again in term {term_back}, {:.1} s after its restart; height {} ({:.1} s in all)",
        restarted.elapsed().as_secs_f64(),
        height(&chains[1]),
        started.elapsed().as_secs_f64()
    );
}
