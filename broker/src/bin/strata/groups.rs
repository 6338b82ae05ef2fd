//! `strata group ...`: consumer groups.

use clap::Subcommand;
use strata_broker::admin::pb::admin_client::AdminClient;
use strata_broker::admin::pb::*;
use strata_broker::security::admin::AdminChannel;

use crate::out::{json, table, Output};
use crate::status;

#[derive(Subcommand)]
pub enum GroupCmd {
    List,
    Describe {
        group: String,
    },
    /// Move a group's committed offsets (the group must have no members).
    ResetOffsets {
        group: String,
        /// earliest, latest, offset:N or timestamp:MS
        #[arg(long)]
        to: String,
        /// Topics to reset (default: every topic with committed offsets).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

pub async fn run(
    c: &mut AdminClient<AdminChannel>,
    cmd: GroupCmd,
    out: Output,
) -> Result<(), String> {
    let st = status;
    match cmd {
        GroupCmd::List => {
            let r = c
                .list_groups(ListGroupsRequest { local_only: false })
                .await
                .map_err(st)?
                .into_inner();
            if !r.unavailable_brokers.is_empty() {
                eprintln!(
                    "warning: brokers {:?} did not answer; their groups are not listed",
                    r.unavailable_brokers
                );
            }
            if out == Output::Json {
                return json(&r);
            }
            table(
                &["GROUP", "STATE", "PROTOCOL-TYPE"],
                r.groups
                    .iter()
                    .map(|g| vec![g.group_id.clone(), g.state.clone(), g.protocol_type.clone()])
                    .collect(),
            );
            Ok(())
        }
        GroupCmd::Describe { group } => {
            let d = c
                .describe_group(DescribeGroupRequest { group_id: group })
                .await
                .map_err(st)?
                .into_inner();
            print_group(&d, out)
        }
        GroupCmd::ResetOffsets { group, to, topics } => {
            use reset_group_offsets_request::Target;
            let (target, value) = match to.split_once(':') {
                None if to == "earliest" => (Target::Earliest, 0),
                None if to == "latest" => (Target::Latest, 0),
                Some(("offset", v)) => (
                    Target::Offset,
                    v.parse().map_err(|_| format!("bad offset `{v}`"))?,
                ),
                Some(("timestamp", v)) => (
                    Target::Timestamp,
                    v.parse().map_err(|_| format!("bad timestamp `{v}`"))?,
                ),
                _ => {
                    return Err(format!(
                        "--to expects earliest, latest, offset:N or timestamp:MS, got `{to}`"
                    ))
                }
            };
            let d = c
                .reset_group_offsets(ResetGroupOffsetsRequest {
                    group_id: group,
                    target: target as i32,
                    value,
                    topics,
                })
                .await
                .map_err(st)?
                .into_inner();
            print_group(&d, out)
        }
    }
}

fn print_group(d: &GroupDescription, out: Output) -> Result<(), String> {
    if out == Output::Json {
        return json(&d);
    }
    println!(
        "group {}: {} (generation {}, protocol {}), total lag {}",
        d.group_id, d.state, d.generation, d.protocol, d.total_lag
    );
    table(
        &["MEMBER", "INSTANCE", "CLIENT", "ASSIGNMENT"],
        d.members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.client_id.clone(),
                    m.assignment.join(","),
                ]
            })
            .collect(),
    );
    table(
        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"],
        d.lag
            .iter()
            .map(|l| {
                vec![
                    l.topic.clone(),
                    l.partition.to_string(),
                    l.committed_offset.to_string(),
                    l.end_offset.to_string(),
                    l.lag.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}
