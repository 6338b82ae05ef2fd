//! Offset resets as an explicit command (`spec.offsetReset`): the pure part.
//!
//! [`decide`] looks at the request, the outcome already recorded in status and
//! the group's state on the brokers, and says whether to wait, run the reset,
//! or record a failure. [`outcome`] turns the broker's answer into the status
//! to record. A reset never runs twice for one `requestId`: once Succeeded or
//! Failed it is final, and a reset caught `Running` (the operator stopped
//! between sending it and recording the answer) is recorded as Failed with an
//! unknown outcome instead of being sent again.

use k8s_openapi::jiff::Timestamp;

use crate::admin::pb::reset_group_offsets_request::Target as PbTarget;
use crate::admin::pb::ResetGroupOffsetsRequest;
use crate::admin::AdminError;
use crate::crd::consumergroup::{
    ConsumerGroupSpec, OffsetResetPhase, OffsetResetSpec, OffsetResetStatus,
};

/// Where to move the committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    /// An absolute offset; the broker clamps it to each partition's range.
    Offset(i64),
    /// Milliseconds since the epoch: the first offset at or after it.
    Timestamp(i64),
}

/// Parses `spec.offsetReset.target`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    match s {
        "Earliest" => Ok(Target::Earliest),
        "Latest" => Ok(Target::Latest),
        _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<i64>()
            .map(Target::Offset)
            .map_err(|e| format!("offset `{s}`: {e}")),
        _ => s
            .parse::<Timestamp>()
            .map(|t| Target::Timestamp(t.as_millisecond()))
            .map_err(|_| {
                format!("target `{s}` is not Earliest, Latest, an offset or an RFC 3339 timestamp")
            }),
    }
}

/// The admin request for `target` on the group's topics (all topics with
/// commits when `topics` is empty).
pub fn request(group_id: &str, target: Target, topics: &[String]) -> ResetGroupOffsetsRequest {
    let (target, value) = match target {
        Target::Earliest => (PbTarget::Earliest, 0),
        Target::Latest => (PbTarget::Latest, 0),
        Target::Offset(o) => (PbTarget::Offset, o),
        Target::Timestamp(ms) => (PbTarget::Timestamp, ms),
    };
    ResetGroupOffsetsRequest {
        group_id: group_id.to_string(),
        target: target as i32,
        value,
        topics: topics.to_vec(),
    }
}

/// What to do about `spec.offsetReset` in this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No request, or its outcome is final: keep the recorded status.
    Keep,
    /// Record this (Pending) status and look again at the next refresh.
    Wait(OffsetResetStatus),
    /// Record Running, then send this request.
    Execute(ResetGroupOffsetsRequest),
    /// Record this final (Failed) status without calling the broker.
    Fail(OffsetResetStatus),
}

/// Decides from the request, the recorded outcome and the group's state
/// (`None` when the brokers do not know the group: nobody joined and nothing
/// was committed, so it is as good as Empty).
pub fn decide(
    spec: &ConsumerGroupSpec,
    recorded: Option<&OffsetResetStatus>,
    group_state: Option<(&str, usize)>,
) -> Decision {
    let Some(req) = spec.offset_reset.as_ref() else {
        return Decision::Keep;
    };
    let recorded = recorded.filter(|r| r.request_id == req.request_id);
    match recorded.map(|r| r.phase) {
        Some(phase) if phase.is_final() => return Decision::Keep,
        Some(OffsetResetPhase::Running) => {
            return Decision::Fail(status(
                req,
                OffsetResetPhase::Failed,
                "the operator stopped while this reset was running, so its outcome is unknown; \
                 check the group's offsets and use a new requestId to reset again"
                    .into(),
            ))
        }
        _ => {}
    }
    let target = match parse_target(&req.target) {
        Ok(t) => t,
        Err(e) => return Decision::Fail(status(req, OffsetResetPhase::Failed, e)),
    };
    match group_state {
        Some((state, members)) if !is_empty_state(state) || members > 0 => Decision::Wait(status(
            req,
            OffsetResetPhase::Pending,
            format!(
                "waiting for the group to be Empty (it is {state} with {members} members); \
                     stop its consumers"
            ),
        )),
        _ => Decision::Execute(request(&spec.group_id, target, &spec.topics)),
    }
}

fn is_empty_state(state: &str) -> bool {
    matches!(state, "Empty" | "Dead")
}

/// The status that records the reset as sent, before the broker answers.
pub fn running(req: &OffsetResetSpec) -> OffsetResetStatus {
    status(
        req,
        OffsetResetPhase::Running,
        "reset sent to the brokers".into(),
    )
}

/// The status to record for the broker's answer. Only answers that prove the
/// reset did not happen (unreachable brokers, members joined, no controller
/// yet) leave it Pending for a retry; an unknown outcome is final.
pub fn outcome(
    req: &OffsetResetSpec,
    topics: &[String],
    result: &Result<(), AdminError>,
    now: Timestamp,
) -> OffsetResetStatus {
    let (phase, message) = match result {
        Ok(()) => (
            OffsetResetPhase::Succeeded,
            format!(
                "committed offsets of {} moved to {}",
                if topics.is_empty() {
                    "every committed topic".to_string()
                } else {
                    topics.join(", ")
                },
                req.target
            ),
        ),
        Err(AdminError::Unreachable { tried, last }) => (
            OffsetResetPhase::Pending,
            format!("no broker reachable ({tried}: {last}); retrying"),
        ),
        Err(AdminError::Status { code, message }) => match code {
            tonic::Code::FailedPrecondition => (
                OffsetResetPhase::Pending,
                format!("{message}; waiting for the group to be Empty"),
            ),
            tonic::Code::Unavailable => (
                OffsetResetPhase::Pending,
                format!("brokers unavailable ({message}); retrying"),
            ),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => (
                OffsetResetPhase::Failed,
                format!(
                    "outcome unknown ({code:?}: {message}); check the group's offsets and use a \
                     new requestId to reset again"
                ),
            ),
            _ => (OffsetResetPhase::Failed, format!("{code:?}: {message}")),
        },
    };
    let mut s = status(req, phase, message);
    if phase.is_final() {
        s.completion_time = Some(now.to_string());
    }
    s
}

fn status(req: &OffsetResetSpec, phase: OffsetResetPhase, message: String) -> OffsetResetStatus {
    OffsetResetStatus {
        request_id: req.request_id.clone(),
        phase,
        target: Some(req.target.clone()),
        message: Some(message),
        completion_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ConsumerGroupSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn with_reset(target: &str, id: &str) -> ConsumerGroupSpec {
        spec(&format!(
            "clusterRef: demo\ngroupId: g\ntopics: [orders]\noffsetReset: {{target: \"{target}\", requestId: {id}}}"
        ))
    }

    fn recorded(id: &str, phase: OffsetResetPhase) -> OffsetResetStatus {
        OffsetResetStatus {
            request_id: id.into(),
            phase,
            target: None,
            message: None,
            completion_time: None,
        }
    }

    #[test]
    fn targets_parse_to_the_admin_request() {
        assert_eq!(parse_target("Earliest"), Ok(Target::Earliest));
        assert_eq!(parse_target("Latest"), Ok(Target::Latest));
        assert_eq!(parse_target("42"), Ok(Target::Offset(42)));
        assert_eq!(
            parse_target("2025-01-01T00:00:01Z"),
            Ok(Target::Timestamp(1_735_689_601_000))
        );
        assert!(parse_target("earliest").is_err());
        assert!(parse_target("99999999999999999999").is_err());
        let r = request("g", Target::Offset(7), &["orders".into()]);
        assert_eq!(r.target, PbTarget::Offset as i32);
        assert_eq!(
            (r.value, r.topics.as_slice()),
            (7, &["orders".to_string()][..])
        );
    }

    #[test]
    fn no_request_keeps_the_recorded_outcome() {
        let s = spec("clusterRef: demo\ngroupId: g");
        assert_eq!(decide(&s, None, Some(("Empty", 0))), Decision::Keep);
    }

    #[test]
    fn a_reset_runs_only_while_the_group_is_empty() {
        let s = with_reset("Earliest", "r1");
        match decide(&s, None, Some(("Stable", 2))) {
            Decision::Wait(st) => {
                assert_eq!(st.phase, OffsetResetPhase::Pending);
                assert!(st.message.unwrap_or_default().contains("Stable with 2"));
            }
            other => panic!("{other:?}"),
        }
        // Rebalancing with members is not Empty either.
        assert!(matches!(
            decide(&s, None, Some(("PreparingRebalance", 1))),
            Decision::Wait(_)
        ));
        match decide(&s, None, Some(("Empty", 0))) {
            Decision::Execute(r) => {
                assert_eq!(r.group_id, "g");
                assert_eq!(r.target, PbTarget::Earliest as i32);
                assert_eq!(r.topics, vec!["orders".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // A group the brokers do not know yet has nobody to disturb.
        assert!(matches!(decide(&s, None, None), Decision::Execute(_)));
        // Pending from an earlier refresh runs once the group is Empty.
        let pending = recorded("r1", OffsetResetPhase::Pending);
        assert!(matches!(
            decide(&s, Some(&pending), Some(("Empty", 0))),
            Decision::Execute(_)
        ));
    }

    #[test]
    fn a_request_id_never_runs_twice() {
        let s = with_reset("Latest", "r1");
        for phase in [OffsetResetPhase::Succeeded, OffsetResetPhase::Failed] {
            assert_eq!(
                decide(&s, Some(&recorded("r1", phase)), Some(("Empty", 0))),
                Decision::Keep
            );
        }
        // Sent but never recorded: the outcome is unknown, so it fails instead of resending.
        match decide(
            &s,
            Some(&recorded("r1", OffsetResetPhase::Running)),
            Some(("Empty", 0)),
        ) {
            Decision::Fail(st) => {
                assert_eq!(st.phase, OffsetResetPhase::Failed);
                assert!(st.message.unwrap_or_default().contains("unknown"));
            }
            other => panic!("{other:?}"),
        }
        // A new requestId is a new command.
        assert!(matches!(
            decide(
                &with_reset("Latest", "r2"),
                Some(&recorded("r1", OffsetResetPhase::Succeeded)),
                Some(("Empty", 0))
            ),
            Decision::Execute(_)
        ));
    }

    #[test]
    fn a_bad_target_fails_without_calling_the_broker() {
        match decide(&with_reset("yesterday", "r1"), None, Some(("Empty", 0))) {
            Decision::Fail(st) => assert_eq!(st.phase, OffsetResetPhase::Failed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outcomes_retry_only_when_the_reset_surely_did_not_happen() {
        let req = OffsetResetSpec {
            target: "Earliest".into(),
            request_id: "r1".into(),
        };
        let now: Timestamp = "2025-01-01T00:00:00Z".parse().expect("ts");
        let topics = vec!["orders".to_string()];
        let ok = outcome(&req, &topics, &Ok(()), now);
        assert_eq!(ok.phase, OffsetResetPhase::Succeeded);
        assert_eq!(ok.completion_time.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert!(ok.message.unwrap_or_default().contains("orders"));
        let status = |code, msg: &str| {
            Err(AdminError::Status {
                code,
                message: msg.into(),
            })
        };
        let phase = |r: &Result<(), AdminError>| outcome(&req, &topics, r, now).phase;
        assert_eq!(
            phase(&status(tonic::Code::FailedPrecondition, "members")),
            OffsetResetPhase::Pending
        );
        assert_eq!(
            phase(&status(tonic::Code::Unavailable, "no controller")),
            OffsetResetPhase::Pending
        );
        assert_eq!(
            phase(&Err(AdminError::Unreachable {
                tried: "a".into(),
                last: "refused".into()
            })),
            OffsetResetPhase::Pending
        );
        assert_eq!(
            phase(&status(tonic::Code::NotFound, "unknown topic")),
            OffsetResetPhase::Failed
        );
        let unknown = outcome(
            &req,
            &topics,
            &status(tonic::Code::DeadlineExceeded, "timeout"),
            now,
        );
        assert_eq!(unknown.phase, OffsetResetPhase::Failed);
        assert!(unknown.completion_time.is_some());
    }
}
