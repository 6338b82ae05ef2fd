//! DescribeLogDirs (`kafka-log-dirs`, AdminClient `describeLogDirs`): this broker's
//! data directory with the size of every local replica and the filesystem's total
//! and usable bytes (v4). A tiered topic's history lives in the object store, not in
//! a directory of this broker, so its size there is reported under a second "log
//! dir" named after the tier (`tier://<bucket>/<prefix>`), for the partitions this
//! broker leads; `kafka-log-dirs` then shows local and remote bytes side by side.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::broker::Broker;
use crate::replicas::TopicState;
use crate::telemetry::filesystem_space;

pub async fn handle(
    broker: &Arc<Broker>,
    req: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    // `None`: every partition of every topic.
    let wanted: Option<HashMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let topics: Vec<Arc<TopicState>> = broker
        .replicas
        .all_topics()
        .into_iter()
        .filter(|t| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains_key(&t.record.name))
        })
        .collect();
    let included = |t: &TopicState, index: i32| {
        wanted
            .as_ref()
            .is_none_or(|w| w.get(&t.record.name).is_some_and(|ps| ps.contains(&index)))
    };
    let mut local = DescribeLogDirsResult::default();
    local.log_dir = str_bytes(broker.config.data_dir.display().to_string());
    local.total_bytes = -1;
    local.usable_bytes = -1;
    if version >= 4 {
        if let Ok(space) = filesystem_space(&broker.config.data_dir) {
            local.total_bytes = i64::try_from(space.total).unwrap_or(i64::MAX);
            local.usable_bytes = i64::try_from(space.available).unwrap_or(i64::MAX);
        }
    }
    let mut remote = DescribeLogDirsResult::default();
    remote.total_bytes = -1;
    remote.usable_bytes = -1;
    for t in &topics {
        let mut lt = DescribeLogDirsTopic::default();
        lt.name = TopicName(str_bytes(t.record.name.clone()));
        let mut rt = lt.clone();
        for p in t.local().filter(|p| included(t, p.index)) {
            let mut lp = DescribeLogDirsPartition::default();
            lp.partition_index = p.index;
            lp.partition_size = i64::try_from(p.size_bytes()).unwrap_or(i64::MAX);
            lp.offset_lag = (p.high_watermark() - p.log_end_offset()).max(0);
            lt.partitions.push(lp);
            if let (Some(tier), true) = (&broker.tier, p.is_leader()) {
                let log = tier.remote_log(&t.record.id, p);
                if !log.segments().is_empty() {
                    let mut rp = DescribeLogDirsPartition::default();
                    rp.partition_index = p.index;
                    rp.partition_size = log
                        .segments()
                        .iter()
                        .map(|seg| i64::try_from(seg.size_bytes).unwrap_or(i64::MAX))
                        .fold(0i64, i64::saturating_add);
                    rt.partitions.push(rp);
                }
            }
        }
        if !lt.partitions.is_empty() {
            local.topics.push(lt);
        }
        if !rt.partitions.is_empty() {
            remote.topics.push(rt);
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.results.push(local);
    if !remote.topics.is_empty() {
        let cfg = &broker.config;
        remote.log_dir = str_bytes(format!("tier://{}/{}", cfg.tier_bucket, cfg.tier_prefix));
        resp.results.push(remote);
    }
    resp
}
