use super::*;

#[test]
fn the_log_starts_where_the_tier_starts_once_anything_was_uploaded() {
    use crate::metadata::remote_log::tests::seg;
    let mut remote = RemoteLog::default();
    assert_eq!(log_start(&remote, 300), 300, "nothing tiered");
    for (b, e) in [(0, 200), (200, 400), (400, 600)] {
        remote.commit(seg(b, e, 0, 1)).unwrap();
    }
    assert_eq!(log_start(&remote, 300), 0, "the tier holds older data");
    // Total retention removed the two oldest remote segments; local retention has
    // not yet deleted the local copy that starts at 300: the log starts at 400.
    remote.expire_through(400);
    assert_eq!(log_start(&remote, 300), 400);
    remote.expire_through(600);
    assert_eq!(log_start(&remote, 300), 600, "every remote segment expired");
    assert_eq!(log_start(&remote, 700), 700);
}

#[test]
fn only_whole_topic_prefixes_are_deleted() {
    let id = Uuid::new_v4();
    assert!(is_topic_prefix(&topic_prefix("orders", &id)));
    assert!(is_topic_prefix(&topic_prefix("a-b-c", &id)));
    assert!(!is_topic_prefix(""));
    assert!(!is_topic_prefix("orders"));
    assert!(!is_topic_prefix(&format!(
        "x/{}",
        topic_prefix("orders", &id)
    )));
    assert!(uploader::partition_prefix("orders", &id, 3).starts_with(&topic_prefix("orders", &id)));
}
