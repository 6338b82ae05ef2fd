//! ConsumerGroup controller: observe-and-act. Clients own membership; the
//! operator reads the group from the admin API every refresh interval and
//! reports state, members and lag ([`status`]), runs explicit offset resets
//! while the group is Empty ([`reset`]), and owns an HPA that scales the
//! consumers on lag ([`hpa`]). [`observe`] is the read shared with the
//! External metrics server.

pub mod controller;
pub mod hpa;
pub mod observe;
pub mod reset;
pub mod status;
