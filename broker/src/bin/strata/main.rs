//! `strata`: the command-line client of the admin gRPC API.
//!
//! ```text
//! strata topic create orders --partitions 6 --replication-factor 1 --config retention.ms=3600000
//! strata topic list | describe NAME | delete NAME
//! strata topic delete-records NAME PARTITION --offset N
//! strata cluster describe
//! strata broker drain ID | undrain ID
//! strata group list | describe GROUP
//! strata txn list [--state Ongoing] | describe TXN_ID | abort TXN_ID
//! ```
//! `--output json` prints the API's messages as JSON instead of tables.

use std::collections::HashMap;
use std::process::ExitCode;

mod groups;
mod out;
mod txns;

use clap::{Parser, Subcommand};
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::*;
use strata_broker::security::admin::{read_token, AdminClientSecurity};

use groups::GroupCmd;
use out::{ids, json, table, Output};
use txns::TxnCmd;

#[derive(Parser)]
#[command(name = "strata", version, about = "Strata admin CLI")]
struct Cli {
    /// Admin API address of any broker.
    #[arg(
        long,
        env = "STRATA_ADMIN",
        default_value = "http://127.0.0.1:9093",
        global = true
    )]
    admin: String,
    /// CA file (PEM) the admin listener's certificate chains to: connect with TLS.
    #[arg(long, env = "STRATA_ADMIN_CA", global = true)]
    admin_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a TLS admin listener (with --admin-key).
    #[arg(long, env = "STRATA_ADMIN_CERT", global = true, requires = "admin_key")]
    admin_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --admin-cert.
    #[arg(long, env = "STRATA_ADMIN_KEY", global = true, requires = "admin_cert")]
    admin_key: Option<std::path::PathBuf>,
    /// The DNS name to verify the admin listener's certificate against, when it
    /// differs from the host of --admin (the broker's `admin_ssl_peer_name`).
    #[arg(long, env = "STRATA_ADMIN_SERVER_NAME", global = true)]
    admin_server_name: Option<String>,
    /// File holding the admin API's bearer token.
    #[arg(long, env = "STRATA_ADMIN_TOKEN_FILE", global = true)]
    admin_token_file: Option<std::path::PathBuf>,
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Topics.
    Topic {
        #[command(subcommand)]
        cmd: TopicCmd,
    },
    /// The cluster and its brokers.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// One broker.
    Broker {
        #[command(subcommand)]
        cmd: BrokerCmd,
    },
    /// Consumer groups.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Transactions (their coordinators' view).
    Txn {
        #[command(subcommand)]
        cmd: TxnCmd,
    },
}

#[derive(Subcommand)]
enum TopicCmd {
    Create {
        name: String,
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
        /// key=value, repeatable.
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    List {
        #[arg(long)]
        include_internal: bool,
    },
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Move a partition to other brokers (new replicas catch up before old ones go).
    Reassign {
        name: String,
        partition: i32,
        /// Target broker ids, preferred leader first: --replicas 2,3,4
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<i32>,
    },
    /// Progress of a reassignment started with `topic reassign` or
    /// `topic set-replication-factor`.
    ReassignmentStatus {
        id: String,
    },
    /// Give every partition of a topic this many replicas (moves run as a reassignment).
    SetReplicationFactor {
        name: String,
        replication_factor: i32,
    },
    /// Delete every record of a partition below an offset (the log start moves there).
    DeleteRecords {
        name: String,
        partition: i32,
        /// The new log start offset; -1: the high watermark (delete everything).
        #[arg(long, allow_negative_numbers = true)]
        offset: i64,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Describe,
}

#[derive(Subcommand)]
enum BrokerCmd {
    Drain {
        id: i32,
    },
    Undrain {
        id: i32,
    },
    /// Forget a broker that left for good (stopped, fenced, holding no replicas).
    Unregister {
        id: i32,
    },
}

fn print_reassignment(r: &ReassignmentStatus, out: Output) -> Result<(), String> {
    if out == Output::Json {
        return json(r);
    }
    let phase = reassignment_status::Phase::try_from(r.phase)
        .map(|p| p.as_str_name().trim_start_matches("PHASE_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "reassignment {}: {phase}, {}/{} moves done ({})",
        r.id, r.completed_moves, r.total_moves, r.message
    );
    Ok(())
}

fn state_name(s: i32) -> &'static str {
    match BrokerState::try_from(s) {
        Ok(BrokerState::Alive) => "alive",
        Ok(BrokerState::Draining) => "draining",
        Ok(BrokerState::Fenced) => "fenced",
        _ => "unknown",
    }
}

fn print_topic(t: &TopicDescription, out: Output) -> Result<(), String> {
    if out == Output::Json {
        return json(t);
    }
    println!(
        "topic {} (id {}): {} partitions, replication factor {}",
        t.name, t.topic_id, t.partitions, t.replication_factor
    );
    let mut cfg: Vec<_> = t.configs.iter().collect();
    cfg.sort();
    for (k, v) in cfg {
        println!("  {k}={v}");
    }
    table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
            "BYTES",
            "LOCAL-START",
            "TIER-START",
            "TIER-END",
            "TIER-BYTES",
        ],
        t.partition_details
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    p.log_start_offset.to_string(),
                    p.high_watermark.to_string(),
                    p.size_bytes.to_string(),
                    p.local_start_offset.to_string(),
                    p.remote_start_offset.to_string(),
                    p.remote_end_offset.to_string(),
                    p.remote_size_bytes.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

const BROKER_COLUMNS: [&str; 6] = ["ID", "ADDRESS", "RACK", "STATE", "REPLICAS", "LEADERS"];

fn broker_row(b: &BrokerDescription) -> Vec<String> {
    vec![
        b.id.to_string(),
        format!("{}:{}", b.host, b.port),
        b.rack.clone(),
        state_name(b.state).into(),
        b.replicas.to_string(),
        b.leaders.to_string(),
    ]
}

fn print_broker(b: &BrokerDescription, out: Output) -> Result<(), String> {
    if out == Output::Json {
        return json(b);
    }
    table(&BROKER_COLUMNS, vec![broker_row(b)]);
    Ok(())
}

/// A gRPC error as the CLI prints it.
fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

async fn run(cli: Cli) -> Result<(), String> {
    let security = AdminClientSecurity {
        ca: cli.admin_ca.clone(),
        identity: cli.admin_cert.clone().zip(cli.admin_key.clone()),
        token: cli
            .admin_token_file
            .as_deref()
            .map(read_token)
            .transpose()?,
        server_name: cli.admin_server_name.clone(),
    };
    if security.identity.is_some() && !security.tls() {
        return Err("--admin-cert needs --admin-ca (the CA of the admin listener)".into());
    }
    let channel = security
        .endpoint(&cli.admin)?
        .connect()
        .await
        .map_err(|e| format!("cannot reach the admin API at {}: {e:?}", cli.admin))?;
    let mut c = AdminClient::new(security.wrap(channel));
    let out = cli.output;
    let st = status;
    match cli.command {
        Command::Topic { cmd } => match cmd {
            TopicCmd::Create {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let mut map = HashMap::new();
                for kv in configs {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("--config expects key=value, got `{kv}`"))?;
                    map.insert(k.to_string(), v.to_string());
                }
                let t = c
                    .create_topic(CreateTopicRequest {
                        name,
                        partitions,
                        replication_factor,
                        configs: map,
                        validate_only: false,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                print_topic(&t, out)
            }
            TopicCmd::List { include_internal } => {
                let r = c
                    .list_topics(ListTopicsRequest { include_internal })
                    .await
                    .map_err(st)?
                    .into_inner();
                if out == Output::Json {
                    return json(&r);
                }
                table(
                    &["TOPIC", "PARTITIONS", "RF", "BYTES"],
                    r.topics
                        .iter()
                        .map(|t| {
                            let bytes: i64 = t.partition_details.iter().map(|p| p.size_bytes).sum();
                            vec![
                                t.name.clone(),
                                t.partitions.to_string(),
                                t.replication_factor.to_string(),
                                bytes.to_string(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            TopicCmd::Describe { name } => {
                let t = c
                    .describe_topic(DescribeTopicRequest { name })
                    .await
                    .map_err(st)?
                    .into_inner();
                print_topic(&t, out)
            }
            TopicCmd::Delete { name } => {
                c.delete_topic(DeleteTopicRequest { name: name.clone() })
                    .await
                    .map_err(st)?;
                if out == Output::Json {
                    return json(&serde_json::json!({ "deleted": name }));
                }
                println!("deleted topic {name}");
                Ok(())
            }
            TopicCmd::Reassign {
                name,
                partition,
                replicas,
            } => {
                let r = c
                    .reassign_partitions(ReassignPartitionsRequest {
                        moves: vec![PartitionMove {
                            topic: name,
                            partition,
                            replicas,
                        }],
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                print_reassignment(&r, out)
            }
            TopicCmd::SetReplicationFactor {
                name,
                replication_factor,
            } => {
                let r = c
                    .set_replication_factor(SetReplicationFactorRequest {
                        topic: name,
                        replication_factor,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                print_reassignment(&r, out)
            }
            TopicCmd::DeleteRecords {
                name,
                partition,
                offset,
            } => {
                let r = c
                    .delete_records(DeleteRecordsRequest {
                        topic: name.clone(),
                        partition,
                        offset,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                if out == Output::Json {
                    return json(&r);
                }
                println!("{name}-{partition}: log start offset {}", r.low_watermark);
                Ok(())
            }
            TopicCmd::ReassignmentStatus { id } => {
                let r = c
                    .get_reassignment(GetReassignmentRequest { id })
                    .await
                    .map_err(st)?
                    .into_inner();
                print_reassignment(&r, out)
            }
        },
        Command::Cluster {
            cmd: ClusterCmd::Describe,
        } => {
            let d = c
                .describe_cluster(DescribeClusterRequest {})
                .await
                .map_err(st)?
                .into_inner();
            if out == Output::Json {
                return json(&d);
            }
            println!(
                "cluster {}: controller {}, {} under-replicated, {} offline partitions; quorum voters {:?}, learners {:?}",
                d.cluster_id,
                d.controller_id,
                d.under_replicated_partitions,
                d.offline_partitions,
                d.quorum_voters,
                d.quorum_learners
            );
            table(&BROKER_COLUMNS, d.brokers.iter().map(broker_row).collect());
            Ok(())
        }
        Command::Broker { cmd } => {
            let b = match cmd {
                BrokerCmd::Drain { id } => {
                    c.drain_broker(DrainBrokerRequest { broker_id: id }).await
                }
                BrokerCmd::Undrain { id } => {
                    c.undrain_broker(DrainBrokerRequest { broker_id: id }).await
                }
                BrokerCmd::Unregister { id } => {
                    c.unregister_broker(UnregisterBrokerRequest { broker_id: id })
                        .await
                        .map_err(st)?;
                    if out == Output::Json {
                        return json(&serde_json::json!({ "unregistered": id }));
                    }
                    println!("broker {id} unregistered");
                    return Ok(());
                }
            }
            .map_err(st)?
            .into_inner();
            print_broker(&b, out)
        }
        Command::Group { cmd } => groups::run(&mut c, cmd, out).await,
        Command::Txn { cmd } => txns::run(&mut c, cmd, out).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::FAILURE
        }
    }
}
