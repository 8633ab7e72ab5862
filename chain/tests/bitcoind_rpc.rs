//! The bitcoind JSON-RPC client against a small JSON-RPC server on loopback that
//! speaks bitcoind's protocol and serves the real regtest genesis block.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    thread,
};

use bitcoin::{Network, blockdata::constants::genesis_block, consensus};
use serde_json::{Value, json};
use tenure_chain::burnchain::{BitcoindRpc, BurnchainError, BurnchainSource};

/// "user:pass" in base64.
const AUTH: &str = "Basic dXNlcjpwYXNz";

/// Serves `requests` JSON-RPC calls on loopback, then stops. Returns the URL.
fn fake_bitcoind(requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            answer(stream.unwrap());
        }
    });
    url
}

fn answer(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut auth) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("authorization:") {
            auth = line["authorization:".len()..].trim().to_owned();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let genesis = genesis_block(Network::Regtest);
    let (status, reply) = if auth != AUTH {
        (401, json!(null))
    } else {
        match request["method"].as_str().unwrap() {
            "getblockcount" => (200, json!({"result": 0, "error": null, "id": "tenure"})),
            "getblockhash" => (
                200,
                json!({"result": genesis.block_hash().to_string(), "error": null, "id": "tenure"}),
            ),
            "getblock" => (
                200,
                json!({"result": hex::encode(consensus::serialize(&genesis)), "error": null, "id": "tenure"}),
            ),
            _ => (
                500,
                json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": "tenure"}),
            ),
        }
    };
    let text = reply.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
}

#[test]
fn reads_the_tip_and_a_real_block() {
    let rpc = BitcoindRpc::with_credentials(&fake_bitcoind(4), "user", "pass");
    assert_eq!(rpc.tip_height().unwrap(), 0);
    let hash = rpc.block_hash(0).unwrap();
    assert_eq!(hash, genesis_block(Network::Regtest).block_hash());
    let block = rpc.block(&hash).unwrap();
    assert!(block.check_merkle_root());
    assert_eq!(
        block.header.validate_pow(block.header.target()).unwrap(),
        hash
    );
    // A block that is not the one asked for is refused.
    let other = genesis_block(Network::Bitcoin).block_hash();
    assert!(matches!(
        rpc.block(&other),
        Err(BurnchainError::Malformed { .. })
    ));
}

#[test]
fn a_cookie_file_gives_the_credentials() {
    let dir = std::env::temp_dir().join(format!("tenure-cookie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cookie = dir.join(".cookie");
    std::fs::write(&cookie, "user:pass").unwrap();
    let rpc = BitcoindRpc::with_cookie(&fake_bitcoind(1), &cookie).unwrap();
    assert_eq!(rpc.tip_height().unwrap(), 0);
    std::fs::write(&cookie, "no colon").unwrap();
    assert!(matches!(
        BitcoindRpc::with_cookie("http://127.0.0.1:1/", &cookie),
        Err(BurnchainError::Cookie { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_are_clear() {
    // Wrong credentials.
    let rpc = BitcoindRpc::with_credentials(&fake_bitcoind(1), "user", "wrong");
    let err = rpc.tip_height().unwrap_err();
    assert!(
        matches!(err, BurnchainError::Unauthorized { status: 401, .. }),
        "{err}"
    );

    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rpc = BitcoindRpc::with_credentials(&format!("http://127.0.0.1:{port}/"), "user", "pass");
    let err = rpc.tip_height().unwrap_err();
    assert!(matches!(err, BurnchainError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("unreachable"));
}
