//! Producer ids for InitProducerId, handed out from blocks that the metadata quorum
//! reserves for this broker (`AllocateProducerIds`), so no two brokers — and no
//! restarted broker — ever hand out the same id.

use tokio::sync::Mutex;

use crate::metadata::cluster::{Applied, Command};
use crate::metadata::MetadataError;
use crate::quorum::Quorum;

#[derive(Debug, Default)]
pub struct ProducerIdAllocator {
    /// (next id, end of the reserved block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// Returns a producer id never handed out before, reserving a new block through
    /// the quorum when the current one is used up.
    pub async fn next(&self, quorum: &Quorum, broker: i32) -> Result<i64, MetadataError> {
        let mut st = self.state.lock().await;
        if st.0 >= st.1 {
            match quorum
                .propose(Command::AllocateProducerIds { broker })
                .await?
            {
                (_, Applied::ProducerIdBlock { start, len }) => *st = (start, start + len),
                (_, other) => {
                    return Err(MetadataError::Quorum(format!(
                        "unexpected reply to a producer id allocation: {other:?}"
                    )))
                }
            }
        }
        let id = st.0;
        st.0 += 1;
        Ok(id)
    }
}
