//! Where the tier finds and changes what is remote: the remote log of every partition
//! lives in the metadata quorum's [`ClusterState`], so the tier reads the committed
//! list from this broker's applied copy and changes it only by proposing commands
//! (which the state machine checks against the current leader epoch). In a broker
//! that is the [`Quorum`]; unit tests use [`LocalCatalog`], which applies the same
//! commands to a state machine in memory.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::metadata::cluster::{ClusterState, Command};
use crate::metadata::remote_log::RemoteLog;
use crate::metadata::MetadataError;
use crate::quorum::Quorum;

/// How long a committed change may take to show in this broker's applied state.
const APPLY_WAIT: Duration = Duration::from_secs(10);

pub trait Catalog: Send + Sync {
    /// The applied cluster state.
    fn state(&self) -> Arc<ClusterState>;

    /// Whether this broker removes deleted topics' remote objects (one broker does:
    /// the controller).
    fn removes_deleted_topics(&self) -> bool;

    /// Proposes `cmd` and returns once this broker's state includes its outcome.
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<(), MetadataError>>;
}

/// The committed remote log of `topic` (which must still have id `topic_id`)
/// partition `partition`; `None` when the state does not know that partition.
pub fn remote_log(
    state: &ClusterState,
    topic: &str,
    topic_id: &Uuid,
    partition: i32,
) -> Option<Arc<RemoteLog>> {
    let t = state
        .topics
        .get(topic)
        .filter(|t| t.record.id == *topic_id)?;
    let p = t.partitions.get(usize::try_from(partition).ok()?)?;
    Some(Arc::clone(&p.remote))
}

impl Catalog for Quorum {
    fn state(&self) -> Arc<ClusterState> {
        Quorum::state(self)
    }

    fn removes_deleted_topics(&self) -> bool {
        self.is_leader()
    }

    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<(), MetadataError>> {
        Box::pin(async move {
            let (index, _) = Quorum::propose(self, cmd).await?;
            if self.wait_applied(index, APPLY_WAIT).await {
                Ok(())
            } else {
                Err(MetadataError::Quorum(format!(
                    "committed at index {index} but not applied here within {APPLY_WAIT:?}"
                )))
            }
        })
    }
}

/// A state machine in memory that applies proposals directly (tests, tools).
#[derive(Debug, Default)]
pub struct LocalCatalog {
    state: parking_lot::Mutex<Arc<ClusterState>>,
}

impl LocalCatalog {
    /// A catalog holding broker 0 and `record`, every partition led by broker 0 at
    /// epoch 0 (what [`Partition::standalone`](crate::partition::Partition::standalone)
    /// assumes).
    pub fn with_topic(record: &crate::metadata::TopicRecord) -> Result<Self, MetadataError> {
        let mut s = ClusterState::default();
        s.apply(Command::RegisterBroker {
            id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            internal: String::new(),
            listeners: Default::default(),
            now_ms: 0,
        })?;
        s.apply(Command::CreateTopic {
            record: record.clone(),
            assignment: vec![vec![0]; record.partitions.max(0) as usize],
        })?;
        Ok(LocalCatalog {
            state: parking_lot::Mutex::new(Arc::new(s)),
        })
    }

    /// Applies a command as the quorum would (controller actions in tests).
    pub fn apply(&self, cmd: Command) -> Result<(), MetadataError> {
        let mut guard = self.state.lock();
        let mut next = (**guard).clone();
        next.apply(cmd)?;
        *guard = Arc::new(next);
        Ok(())
    }
}

impl Catalog for LocalCatalog {
    fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.state.lock())
    }

    fn removes_deleted_topics(&self) -> bool {
        true
    }

    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<(), MetadataError>> {
        let r = self.apply(cmd);
        Box::pin(async move { r })
    }
}
