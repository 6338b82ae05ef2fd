//! Consumer groups: the membership state machine (`state`), committed offsets kept in
//! the internal `__consumer_offsets` topic (`offsets`), and the coordinator that owns
//! both and runs their timers.

pub mod coordinator;
pub mod offsets;
pub mod protocol;
pub mod state;
