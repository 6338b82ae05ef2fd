//! ConsumerGroup controller: observe-and-act. Clients own membership; the
//! operator reads the group from the admin API every refresh interval and
//! reports state, members and lag ([`status`] is the pure part).

pub mod controller;
pub mod status;
