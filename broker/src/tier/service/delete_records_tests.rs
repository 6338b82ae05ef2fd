//! DeleteRecords on a tiered partition: remote segments wholly below the new log
//! start leave the remote log and the bucket, and no remote record below it is served.

use crate::partition::Partition;
use crate::tier::reader::tests::setup;
use crate::tier::reader::RemoteFetch;

#[tokio::test]
async fn deleted_records_leave_the_tier_and_are_no_longer_served() {
    let (s, tier, _) = setup().await;
    let before = tier.remote_log(&s.rec.id, &s.p);
    let segs = before.segments().to_vec();
    assert!(segs.len() >= 3, "{segs:?}");
    let local_start = s.p.log_start_offset();
    // Inside the second remote segment, below what local disk holds.
    let x = segs[1].base_offset + 2;
    assert!(x < local_start);
    assert_eq!(s.p.delete_records(x), Ok(local_start));
    assert_eq!(tier.log_start_offset(&s.rec.id, &s.p, local_start), x);
    assert!(matches!(
        tier.fetch(&s.rec.id, &s.p, x - 1, 100, true).await,
        Ok(RemoteFetch::OutOfRange)
    ));
    assert!(matches!(
        tier.fetch(&s.rec.id, &s.p, x, 100, true).await,
        Ok(RemoteFetch::Records(_))
    ));
    // The existing expiry path drops the first segment from the remote log, then
    // deletes its objects; the second, which holds `x`, stays.
    tier.delete_records(&s.rec, &s.p).await;
    let after = tier.remote_log(&s.rec.id, &s.p);
    assert_eq!(after.start_offset(), Some(segs[1].base_offset));
    assert_eq!(after.segments().len(), segs.len() - 1);
    for key in [segs[0].log_key.clone(), segs[0].index_key()] {
        assert!(
            tier.store.get(&key).await.is_err(),
            "{key} still in the bucket"
        );
    }
    assert!(tier.store.get(&segs[1].log_key).await.is_ok());
    assert_eq!(tier.log_start_offset(&s.rec.id, &s.p, local_start), x);
    // The quorum keeps the new start, so a later leader, which never saw the request
    // (a replica of its own with nothing deleted locally), honours it too.
    assert_eq!(after.deleted_below(), x);
    let dir = tempfile::tempdir().unwrap();
    let log = crate::log::PartitionLog::open(dir.path(), s.p.log_config(), true, 0).unwrap();
    let other = Partition::standalone(s.p.topic.clone(), s.p.index, log);
    assert_eq!(other.deleted_below(), 0);
    assert_eq!(tier.log_start_offset(&s.rec.id, &other, local_start), x);
    assert!(matches!(
        tier.fetch(&s.rec.id, &other, x - 1, 100, true).await,
        Ok(RemoteFetch::OutOfRange)
    ));
}
