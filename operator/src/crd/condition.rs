//! Status conditions shared by all resources: `Ready` (and `Progressing` for a
//! Cluster), with a stable `lastTransitionTime` that only moves when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition every Strata resource reports.
pub const READY: &str = "Ready";
/// A Cluster's: True while it drains, scales or rolls brokers.
pub const PROGRESSING: &str = "Progressing";

/// A condition without the transition time, as the pure stages compute it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Desired {
            type_: READY,
            ready: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Desired {
            type_: READY,
            ready: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges `desired` into the previous conditions: keeps `lastTransitionTime`
/// when the status did not change, so a steady state patches nothing new.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.ready { "True" } else { "False" }.to_string();
            let last = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

/// Whether `conditions` has `type_` = True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_only_moves_when_status_flips() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2024-01-02T00:00:00Z".parse().expect("ts");
        let first = merge(&[], &[Desired::ready("Created", "ok")], Some(1), t0);
        let same = merge(&first, &[Desired::ready("Updated", "ok")], Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].reason, "Updated");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::not_ready("BrokerError", "x")],
            Some(2),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].status, "False");
        assert!(!is_true(&flipped, READY));
        assert!(is_true(&same, READY));
    }
}
