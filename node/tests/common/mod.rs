//! Running `tenure node` processes in tests.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const TENURE: &str = env!("CARGO_BIN_EXE_tenure");
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A `tenure node` process, killed when dropped so a failing test leaves nothing behind.
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tenure node` on `config`. Its log is dropped, unless
/// `TENURE_TEST_LOG_DIR` names a directory: then each node appends its log (at the
/// level `TENURE_TEST_LOG` names, `info` by default) to a file named after its config
/// there, to read after a failure.
fn spawn_node(config: &Path) -> Child {
    let (level, stderr) = match std::env::var_os("TENURE_TEST_LOG_DIR") {
        Some(dir) => {
            let name = config.file_stem().unwrap_or_default().to_string_lossy();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join(format!("{name}.log")))
                .unwrap();
            let level = std::env::var("TENURE_TEST_LOG").unwrap_or_else(|_| "info".into());
            (level, Stdio::from(file))
        }
        None => ("warn".to_owned(), Stdio::null()),
    };
    Command::new(TENURE)
        .args(["node", "--config"])
        .arg(config)
        .env("TENURE_LOG", level)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

impl NodeProcess {
    /// Writes a key and config under `dir/name` (plus `extra` TOML) and starts the node.
    pub fn start(dir: &Path, name: &str, bootstrap: &[String], extra: &str) -> Self {
        let key = dir.join(format!("{name}.key"));
        let out = Command::new(TENURE)
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "keygen failed: {out:?}");
        let config = dir.join(format!("{name}.toml"));
        let bootstrap = bootstrap
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "network_id = \"cli-test\"\n\
                 listen_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\n\
                 bootstrap_peers = [{bootstrap}]\n\
                 data_dir = \"{name}\"\n\
                 key_file = \"{name}.key\"\n\
                 http_listen = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .unwrap();
        NodeProcess {
            child: spawn_node(&config),
            data_dir: dir.join(name),
            config,
        }
    }

    /// Kills the node with SIGKILL (no chance to flush or clean up) and starts it again
    /// on the same config and data.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// Kills the node with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the (killed) node again on the same config and data.
    pub fn restart(&mut self) {
        // The dead node could not remove it; the new one rewrites it.
        let _ = std::fs::remove_file(self.data_dir.join("node.json"));
        self.child = spawn_node(&self.config);
    }

    /// The node's `node.json`, once it has written it.
    pub fn info(&mut self) -> serde_json::Value {
        let path = self.data_dir.join("node.json");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(info) = serde_json::from_str(&text)
            {
                return info;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("node exited early with {status}");
            }
            assert!(started.elapsed() < DEADLINE, "node never wrote node.json");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
