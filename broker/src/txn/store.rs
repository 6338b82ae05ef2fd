//! How the coordinator's state is written to `__transaction_state`: one record per
//! change, keyed by `transactional.id`, the value the whole [`TxnMetadata`] (a
//! tombstone when the id expired); the newest record of a key is its state. A
//! coordinator that starts leading a partition replays it ([`replay`]).

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::state::TxnMetadata;
use crate::log::records;
use crate::partition::Partition;

#[derive(Serialize, Deserialize)]
struct Key {
    #[serde(rename = "t")]
    transactional_id: String,
}

/// Encodes one state change (`None`: the id is forgotten) as a record batch.
pub fn encode(
    transactional_id: &str,
    meta: Option<&TxnMetadata>,
    now_ms: i64,
) -> anyhow::Result<Bytes> {
    let key = serde_json::to_vec(&Key {
        transactional_id: transactional_id.to_string(),
    })?;
    let value = meta.map(serde_json::to_vec).transpose()?;
    records::encode_key_values(
        vec![(Bytes::from(key), value.map(Bytes::from))],
        now_ms,
        None,
    )
}

/// Replays a `__transaction_state` partition from its log start: the newest state
/// of every id it holds. Undecodable records are skipped with a warning.
pub fn replay(p: &Partition) -> anyhow::Result<HashMap<String, TxnMetadata>> {
    let mut out = HashMap::new();
    p.replay_local(
        |h, one| {
            let Some(kvs) = records::decode_key_values(&one) else {
                tracing::warn!(offset = h.base_offset, "skipping undecodable batch in __transaction_state");
                return;
            };
            for (k, v) in kvs {
                let Ok(key) = serde_json::from_slice::<Key>(&k) else {
                    continue;
                };
                match v.map(|v| serde_json::from_slice::<TxnMetadata>(&v)) {
                    Some(Ok(meta)) => {
                        out.insert(key.transactional_id, meta);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(offset = h.base_offset, error = %e, "skipping undecodable transaction state");
                    }
                    None => {
                        out.remove(&key.transactional_id);
                    }
                }
            }
        },
        &|| {},
    )?;
    Ok(out)
}
