//! `tenure`: run a node, a local testnet, keys, and benchmarks.

use tenure_node::{bench, keys, logs, run, stackerdb, testnet};

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tenure",
    version,
    about = "Decentralised block-producer sets over libp2p"
)]
struct Cli {
    /// Log filter (`info`, `tenure=debug,libp2p=warn`, …); overrides TENURE_LOG.
    #[arg(long, global = true, env = "TENURE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node from a TOML config.
    Node {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create a node key file and print its peer id.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run a local mesh of nodes on loopback, with progress and a summary.
    Testnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Producing terms to run (each 10 burn blocks, after three terms of
        /// registration, enrollment and the first key).
        #[arg(long, default_value_t = 3)]
        terms: u64,
        /// The most the run may take, in seconds.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// Milliseconds between the burn blocks the miner node mines.
        #[arg(long, default_value_t = 1000)]
        burn_interval_ms: u64,
        /// Kill the leader's node halfway through and show its replacement.
        #[arg(long)]
        kill_leader: bool,
        /// Make the leader byzantine halfway through: it proposes invalid blocks and
        /// sends invalid signature shares; show that nothing it proposes is signed and
        /// that it is named.
        #[arg(long)]
        byzantine: bool,
        /// Cut a producer off the network for most of the middle term, let it back, and
        /// show it catch up.
        #[arg(long)]
        partition: bool,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Serve the chain's HTTP API (transfers, balances, the tip) for the first
        /// producer at this address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// An account (64 hex digits) the testnet pays 1,000,000 once blocks start, so
        /// a key of your own can send transfers (`tenure tx`).
        #[arg(long)]
        faucet: Option<String>,
    },
    /// Chain client: balances and signed transfers (talks to the chain's HTTP API).
    Tx {
        #[command(subcommand)]
        command: TxCommand,
    },
    /// Stacker DB client: keys, signed writes, reads (talks to a node's HTTP API).
    Stackerdb {
        #[command(subcommand)]
        command: StackerDbCommand,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

/// `tenure tx` commands.
#[derive(Subcommand)]
enum TxCommand {
    /// Print the account of a key file (made with `tenure stackerdb keygen`).
    Account {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Print an account's balance and next nonce.
    Balance {
        /// The chain HTTP API's address (host:port).
        #[arg(long)]
        node: String,
        /// The account, 64 hex digits.
        #[arg(long)]
        account: String,
    },
    /// Sign a transfer with a key file and submit it.
    Send {
        /// The chain HTTP API's address (host:port).
        #[arg(long)]
        node: String,
        /// The sender's key file.
        #[arg(long)]
        key: PathBuf,
        /// The recipient account, 64 hex digits.
        #[arg(long)]
        to: String,
        /// Amount.
        #[arg(long)]
        amount: u64,
        /// Fee (the mempool orders by it).
        #[arg(long, default_value_t = 1)]
        fee: u64,
        /// Nonce (default: the account's next, asked of the node).
        #[arg(long)]
        nonce: Option<u64>,
        /// The network name transfers are signed for.
        #[arg(long, default_value = "testnet")]
        network: String,
    },
}

fn tx_command(command: TxCommand) -> anyhow::Result<()> {
    use tenure_node::tx_client;
    match command {
        TxCommand::Account { key } => println!("{}", tx_client::account_of(&key)?),
        TxCommand::Balance { node, account } => {
            println!(
                "{}",
                serde_json::to_string(&tx_client::balance(&node, &account)?)?
            )
        }
        TxCommand::Send {
            node,
            key,
            to,
            amount,
            fee,
            nonce,
            network,
        } => {
            let answer = tx_client::send(&node, &network, &key, &to, amount, fee, nonce)?;
            tx_client::check_taken(&answer)?;
            println!("{answer}");
        }
    }
    Ok(())
}

/// Which slot of which DB at which node.
#[derive(clap::Args)]
struct SlotAddress {
    /// The node's HTTP address (host:port).
    #[arg(long)]
    node: String,
    /// The DB id.
    #[arg(long)]
    db: String,
    /// The slot.
    #[arg(long)]
    slot: u32,
}

#[derive(Subcommand)]
enum StackerDbCommand {
    /// Create a chunk-signing key and print its public key (for `slot_writers`).
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Sign the contents of a file and write them to a slot.
    Put {
        #[command(flatten)]
        at: SlotAddress,
        /// The version (higher than the slot's).
        #[arg(long)]
        version: u64,
        /// The chunk-signing key file.
        #[arg(long)]
        key: PathBuf,
        /// The file whose bytes are the chunk.
        #[arg(long)]
        data: PathBuf,
    },
    /// Read a slot.
    Get {
        #[command(flatten)]
        at: SlotAddress,
        /// Write the chunk's bytes to this file instead of printing JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The federation a benchmark runs.
#[derive(Debug, clap::Args)]
struct FederationShape {
    /// Members.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Shares of the key.
    #[arg(long, default_value_t = 100)]
    shares: u16,
    /// Shares needed to sign.
    #[arg(long, default_value_t = 67)]
    threshold: u16,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Block production by a producer set over loopback: latency, throughput, failover.
    Produce {
        /// Producers.
        #[arg(long, default_value_t = 10)]
        producers: usize,
        /// Transfers submitted per second [default: 1000; simulated: 50].
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds of load [default: 10; simulated: 20].
        #[arg(long)]
        seconds: Option<u64>,
        /// Run the seeded simulation over a simulated wide-area network instead of
        /// loopback nodes (figures in simulated time).
        #[arg(long)]
        simulated: bool,
        /// Simulated one-way latency range, milliseconds (with --simulated).
        #[arg(long, default_value = "20-200", value_parser = parse_range)]
        latency_ms: (u64, u64),
        /// Share of producer messages lost (with --simulated).
        #[arg(long, default_value_t = 0.01)]
        loss: f64,
        /// The simulation's seed (with --simulated).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Validation time of a block of transfers.
    Validate {
        /// Transfers in the block.
        #[arg(long, default_value_t = 1_000)]
        transfers: usize,
        /// Validations to time.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The weighted DKG across a federation of members over loopback.
    Dkg {
        #[command(flatten)]
        federation: FederationShape,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Signing latency across a federation over loopback, all up and with a crash.
    Sign {
        #[command(flatten)]
        federation: FederationShape,
        /// Signatures to time with every member up.
        #[arg(long, default_value_t = 50)]
        signatures: usize,
        /// Signatures to time with one member crashing mid-round.
        #[arg(long, default_value_t = 10)]
        crashed: usize,
        /// Members holding at most this many shares misbehave for every request.
        #[arg(long, default_value_t = 0)]
        faulty: u16,
        /// How: silent, slow, invalid-share, incomplete, wrong-number, equivocate,
        /// or all (in turn, one per faulty member).
        #[arg(long, default_value = "all")]
        fault: String,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Durable Stacker DB writes per second (signed 4 KiB chunks).
    StackerdbWrite {
        /// Writes to make.
        #[arg(long, default_value_t = 20_000)]
        writes: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stacker DB replication: write-to-all latency, catch-up, traffic.
    StackerdbReplicate {
        /// Replicas.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Writes to time (each to a fresh slot, at most 300).
        #[arg(long, default_value_t = 50)]
        writes: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Gossip propagation: time until every node holds each message.
    Gossip {
        /// Nodes in the mesh.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 1024 * 1024)]
        size: usize,
        /// Messages to publish and measure.
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Messages published first and not measured.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // gossipsub warns when a node publishes a message it already received (two
    // producers completing the same block both publish it): expected, so quiet.
    let default_level = match cli.command {
        Command::Node { .. } => "info,libp2p_gossipsub=error",
        _ => "warn,libp2p_gossipsub=error",
    };
    let filter = cli
        .log
        .as_deref()
        .map(EnvFilter::try_new)
        .unwrap_or_else(|| Ok(EnvFilter::new(default_level)));
    let filter = match filter {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("error: invalid log filter: {err}");
            return ExitCode::FAILURE;
        }
    };
    logs::init(filter);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_report(json: bool, report: &impl serde::Serialize, text: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

fn stackerdb_command(command: StackerDbCommand) -> anyhow::Result<()> {
    use stackerdb::client;
    match command {
        StackerDbCommand::Keygen { out, force } => println!("{}", client::keygen(&out, force)?),
        StackerDbCommand::Put {
            at,
            version,
            key,
            data,
        } => {
            let key = client::load_key(&key)?;
            let bytes = std::fs::read(&data)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", data.display()))?;
            println!(
                "{}",
                client::put(&at.node, &at.db, at.slot, version, &key, bytes)?
            );
        }
        StackerDbCommand::Get { at, out } => {
            let slot_json = client::get(&at.node, &at.db, at.slot)?;
            match out {
                Some(path) => {
                    let bytes = hex::decode(&slot_json.chunk)?;
                    std::fs::write(&path, bytes)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                }
                None => println!("{}", serde_json::to_string(&slot_json)?),
            }
        }
    }
    Ok(())
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node { config } => run::run(&config).await?,
        Command::Keygen { out, force } => {
            let key = tenure_overlay::NodeKey::generate();
            keys::save(&key, &out, force)?;
            println!("{}", key.peer_id());
        }
        Command::Testnet {
            nodes,
            terms,
            duration,
            burn_interval_ms,
            kill_leader,
            byzantine,
            partition,
            json,
            http,
            faucet,
        } => {
            anyhow::ensure!(
                burn_interval_ms >= 10,
                "--burn-interval-ms must be at least 10"
            );
            let faucet = match faucet {
                Some(account) => Some(
                    tenure_chain::block::AccountId::from_hex(&account)
                        .ok_or_else(|| anyhow::anyhow!("--faucet is an account: 64 hex digits"))?,
                ),
                None => None,
            };
            let summary = testnet::run(testnet::TestnetOptions {
                nodes,
                terms,
                duration: Duration::from_secs(duration),
                burn_interval: Duration::from_millis(burn_interval_ms),
                kill_leader,
                byzantine,
                partition,
                http,
                faucet,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{}", summary.to_text());
            }
            if !summary.fully_meshed && !summary.interrupted {
                eprintln!("error: the testnet did not become fully meshed");
                return Ok(ExitCode::FAILURE);
            }
            if summary.blocks == 0 && !summary.interrupted {
                eprintln!("error: the producer set produced no block");
                return Ok(ExitCode::FAILURE);
            }
            if !summary.tips_agree && !summary.interrupted {
                eprintln!("error: the producers ended on different tips");
                return Ok(ExitCode::FAILURE);
            }
            if !summary.follower.agrees && !summary.interrupted {
                eprintln!(
                    "error: the follower ended at height {}, not on the producers' tip (height {})",
                    summary.follower.height, summary.blocks
                );
                return Ok(ExitCode::FAILURE);
            }
            if summary.terms_completed < terms && !summary.interrupted {
                eprintln!(
                    "error: {} of {terms} terms completed with blocks",
                    summary.terms_completed
                );
                return Ok(ExitCode::FAILURE);
            }
            if summary.leader_killed.is_some()
                && summary.failover_ms.is_none()
                && !summary.interrupted
            {
                eprintln!("error: no block after the leader was killed");
                return Ok(ExitCode::FAILURE);
            }
            if partition
                && !summary.interrupted
                && summary
                    .partition
                    .as_ref()
                    .is_none_or(|p| p.caught_up_ms.is_none())
            {
                eprintln!("error: no producer was cut off and caught up again");
                return Ok(ExitCode::FAILURE);
            }
            if byzantine && !summary.interrupted {
                match &summary.byzantine {
                    None => {
                        eprintln!("error: no leader was made byzantine");
                        return Ok(ExitCode::FAILURE);
                    }
                    Some(b) if b.invalid_proposals_signed > 0 => {
                        eprintln!(
                            "error: {} of the byzantine producer's invalid proposals were signed",
                            b.invalid_proposals_signed
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    Some(b) if b.deposed_by == 0 && b.named_cheater == 0 => {
                        eprintln!("error: the byzantine producer was never named");
                        return Ok(ExitCode::FAILURE);
                    }
                    Some(b) if b.blocks_after == 0 => {
                        eprintln!("error: no block after the leader turned byzantine");
                        return Ok(ExitCode::FAILURE);
                    }
                    Some(_) => {}
                }
            }
            if summary.burn_tip_nodes + summary.nodes_killed < summary.nodes && !summary.interrupted
            {
                eprintln!(
                    "error: {} of {} nodes did not reach the burn tip",
                    summary.nodes - summary.burn_tip_nodes,
                    summary.nodes
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Stackerdb { command } => stackerdb_command(command)?,
        Command::Tx { command } => tx_command(command)?,
        Command::Bench {
            bench:
                BenchCommand::Produce {
                    producers,
                    rate,
                    seconds,
                    simulated,
                    latency_ms,
                    loss,
                    seed,
                    json,
                },
        } => {
            if simulated {
                let bench = bench::produce_simulated::SimulatedProduce {
                    producers,
                    rate: rate.unwrap_or(50),
                    seconds: seconds.unwrap_or(20),
                    latency_ms,
                    loss,
                    seed,
                };
                // The simulation is CPU-bound and synchronous: off the runtime's workers.
                let report =
                    tokio::task::spawn_blocking(move || bench::produce_simulated::run(&bench))
                        .await??;
                print_report(json, &report, report.to_text())?;
            } else {
                let report =
                    bench::produce::run(producers, rate.unwrap_or(1_000), seconds.unwrap_or(10))
                        .await?;
                print_report(json, &report, report.to_text())?;
            }
        }
        Command::Bench {
            bench:
                BenchCommand::Validate {
                    transfers,
                    runs,
                    json,
                },
        } => {
            let report = bench::validate::validate(transfers, runs)?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            bench:
                BenchCommand::Dkg {
                    federation: f,
                    json,
                },
        } => {
            let report = bench::federation::dkg(f.members, f.shares, f.threshold).await?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            bench:
                BenchCommand::Sign {
                    federation: f,
                    signatures,
                    crashed,
                    faulty,
                    fault,
                    json,
                },
        } => {
            let faults = bench::federation::Faults {
                shares: faulty,
                kind: fault,
            };
            let report = bench::federation::sign(
                f.members,
                f.shares,
                f.threshold,
                signatures,
                crashed,
                faults,
            )
            .await?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            bench: BenchCommand::StackerdbWrite { writes, json },
        } => {
            let report = bench::stackerdb::write(writes).await?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            bench:
                BenchCommand::StackerdbReplicate {
                    nodes,
                    writes,
                    json,
                },
        } => {
            let report = bench::stackerdb::replicate(nodes, writes).await?;
            print_report(json, &report, report.to_text())?;
        }
        Command::Bench {
            bench:
                BenchCommand::Gossip {
                    nodes,
                    size,
                    messages,
                    warmup,
                    json,
                },
        } => {
            let report = bench::gossip::run(bench::gossip::GossipBenchOptions {
                nodes,
                size,
                messages,
                warmup,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.to_text());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A range of milliseconds written `low-high`.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not low-high"))?;
    let low: u64 = low.trim().parse().map_err(|e| format!("{low:?}: {e}"))?;
    let high: u64 = high.trim().parse().map_err(|e| format!("{high:?}: {e}"))?;
    if low > high {
        return Err(format!("{low} is above {high}"));
    }
    Ok((low, high))
}
