"""The fault suite's checker on hand-written histories: a clean one passes, and each
anomaly class is found in a history that holds exactly that anomaly (so a fault run
that reports 0 anomalies means something)."""
from faults.checker import check

T = "t"


class H:
    """Builds a history with increasing times."""

    def __init__(self):
        self.ops = []
        self.clock = 0.0

    def op(self, process, type_, f, **fields):
        self.clock += 1
        self.ops.append({"time": self.clock, "process": process, "type": type_, "f": f, **fields})
        return self

    def send(self, process, seq, p, o, idempotent=True, outcome="ok"):
        v = f"{process}:{seq}"
        self.op(process, "invoke", "send", topic=T, value=v, seq=seq, idempotent=idempotent)
        if outcome == "ok":
            self.op(process, "ok", "send", topic=T, value=v, partition=p, offset=o)
        else:
            self.op(process, outcome, "send", topic=T, value=v, error="timed out")
        return self

    def final(self, p, values):
        for o, v in enumerate(values):
            self.op("final", "ok", "final", topic=T, partition=p, offset=o, value=v)
        return self

    def read(self, process, assignment, p, o, v):
        return self.op(process, "ok", "read", topic=T, partition=p, offset=o, value=v, assignment=assignment)

    def commit(self, process, offsets, outcome="ok"):
        self.op(process, "invoke", "commit", group="g", topic=T, offsets=offsets)
        return self.op(process, outcome, "commit", group="g", topic=T, offsets=offsets)

    def committed(self, offsets, invoked=None):
        """A read of the committed offsets; `invoked` backdates its start (a slow read)."""
        self.clock += 1
        t = self.clock if invoked is None else invoked
        return self.op("monitor", "ok", "committed", group="g", topic=T, offsets=offsets, invoke_time=t)


def clean():
    h = H()
    h.send("a", 0, 0, 0).send("a", 1, 0, 1).send("b", 0, 1, 0)
    h.send("a", 2, 0, 2, outcome="info")  # unknown outcome: may be present
    h.read("m1", 1, 0, 0, "a:0").read("m1", 1, 0, 1, "a:1")
    h.commit("m1", {"0": 2}).committed({"0": 2})
    h.read("m1", 2, 0, 1, "a:1")  # a new assignment may re-read from the commit
    h.final(0, ["a:0", "a:1"]).final(1, ["b:0"])
    return h


def found(h):
    return check(h.ops).found()


def test_a_clean_history_has_no_anomalies():
    r = check(clean().ops)
    assert r.ok, r.summary()
    assert r.stats["acked"] == 3 and r.stats["unknown"] == 1 and r.stats["reads"] == 3


def test_an_acknowledged_write_missing_from_the_final_read_is_lost():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1).final(0, ["a:0"])
    assert found(h) == {"lost": 1}


def test_a_write_of_unknown_outcome_may_be_missing():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1, outcome="info").send("a", 2, 0, 1, outcome="fail")
    assert found(h.final(0, ["a:0"])) == {}


def test_an_acknowledged_offset_holding_another_value_is_a_mismatch():
    # a:1 was acknowledged at offset 1 but the log has it at 2 (and a:2 at 1).
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1).send("a", 2, 0, 2, outcome="info")
    h.final(0, ["a:0", "a:2", "a:1"])
    got = found(h)
    assert got["ack-mismatch"] == 1, got
    assert "lost" not in got


def test_an_idempotent_value_twice_in_the_log_is_a_duplicate():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1).final(0, ["a:0", "a:1", "a:1"])
    assert found(h) == {"duplicate": 1}


def test_duplicates_of_a_producer_without_idempotence_are_allowed():
    h = H().send("a", 0, 0, 0, idempotent=False).final(0, ["a:0", "a:0"])
    assert found(h) == {}


def test_a_value_nobody_sent_is_a_phantom():
    h = H().send("a", 0, 0, 0).final(0, ["a:0", "x:9"])
    assert found(h) == {"phantom": 1}


def test_two_observers_with_different_values_at_one_offset_are_inconsistent():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1, outcome="info")
    h.read("m1", 1, 0, 0, "a:1")  # a member saw a:1 where the log (and the ack) has a:0
    h.final(0, ["a:0", "a:1"])
    assert found(h) == {"inconsistent-offset": 1}


def test_idempotent_writes_out_of_send_order_are_a_reorder():
    h = H().send("a", 0, 0, 1, outcome="info").send("a", 1, 0, 0, outcome="info")
    h.final(0, ["a:1", "a:0"])
    assert found(h) == {"producer-reorder": 1}


def test_a_member_reading_backwards_within_an_assignment_is_found():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1)
    h.read("m1", 1, 0, 0, "a:0").read("m1", 1, 0, 1, "a:1").read("m1", 1, 0, 0, "a:0")
    h.final(0, ["a:0", "a:1"])
    assert found(h) == {"consumer-backwards": 1}


def test_a_member_jumping_over_records_within_an_assignment_skipped_them():
    h = H().send("a", 0, 0, 0).send("a", 1, 0, 1).send("a", 2, 0, 2)
    h.read("m1", 1, 0, 0, "a:0").read("m1", 1, 0, 2, "a:2")
    h.final(0, ["a:0", "a:1", "a:2"])
    assert found(h) == {"consumer-skip": 1}


def test_committed_offsets_read_lower_than_before_went_backwards():
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.committed({"0": 5}).committed({"0": 3})
    assert found(h) == {"commit-backwards": 1}


def test_a_read_lower_than_an_acknowledged_commit_went_backwards():
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.commit("m1", {"0": 7}).committed({"0": 4})
    assert found(h) == {"commit-backwards": 1}


def test_a_stale_commit_accepted_below_the_current_one_went_backwards():
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.commit("m2", {"0": 9}).commit("m1", {"0": 4})
    assert found(h) == {"commit-backwards": 1}


def test_a_rejected_stale_commit_is_not_an_anomaly():
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.commit("m2", {"0": 9}).commit("m1", {"0": 4}, outcome="fail").committed({"0": 9})
    r = check(h.ops)
    assert r.ok, r.summary()
    assert r.stats["commits_rejected"] == 1


def test_a_slow_read_overlapping_later_commits_is_not_an_anomaly():
    # The read began before m1's commits of 4 and 7 were acknowledged and returned 7:
    # its value held at some moment before it completed, so it sets no floor earlier.
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.commit("m1", {"0": 4})
    began = h.clock
    h.commit("m1", {"0": 7}).committed({"0": 7}, invoked=began - 0.5)
    r = check(h.ops)
    assert r.ok, r.summary()


def test_a_commit_begun_after_a_read_completed_must_not_be_lower():
    h = H().send("a", 0, 0, 0).final(0, ["a:0"])
    h.committed({"0": 7}).commit("m1", {"0": 5})
    assert found(h) == {"commit-backwards": 1}


def tier(h, broker, local_start, remote_end, p=0):
    return h.op("tier-sampler", "ok", "tier-state", topic=T, broker=broker, partition=p,
                local_start=local_start, remote_end=remote_end)


def test_a_local_log_starting_inside_the_tier_is_not_a_gap():
    h = clean()
    tier(h, 1, 0, -1)  # nothing uploaded, nothing deleted
    tier(h, 1, 0, 40)
    tier(h, 1, 40, 40)  # deleted up to what is uploaded
    tier(h, 1, 40, 90)
    tier(h, 2, 30, 90)  # another broker deletes on its own schedule
    tier(h, 2, 90, 90)
    r = check(h.ops)
    assert r.ok, r.summary()
    assert r.stats["tier_samples"] == 6 and r.stats["tier_max_remote_end"] == 90


def test_a_local_start_read_before_the_remote_end_caught_up_is_judged_by_the_next_sample():
    # One sample reads the remote end, then the local start; a deletion allowed by an
    # upload committed in between shows up as local start > remote end of the same
    # sample, and is legitimate when the next sample's remote end covers it.
    h = clean()
    tier(h, 1, 50, 40)
    tier(h, 1, 50, 60)
    assert check(h.ops).ok


def test_offsets_deleted_locally_before_they_were_uploaded_are_a_tier_gap():
    h = clean()
    tier(h, 1, 0, 40)
    tier(h, 1, 70, 40)  # 40..69 neither local nor remote
    tier(h, 1, 70, 40)
    assert found(h) == {"tier-gap": 1}


def test_a_local_log_start_above_zero_with_nothing_uploaded_is_a_tier_gap():
    h = clean()
    tier(h, 3, 20, -1)
    tier(h, 3, 20, -1)
    assert found(h) == {"tier-gap": 1}


def test_a_broker_whose_metadata_lags_is_judged_by_what_the_quorum_committed():
    # Broker 1 reconnects, deletes what its leader deleted (its local start follows
    # the leader's) before it has applied the commits of those uploads: its own view
    # shows a remote end below its local start, the others show the upload.
    h = clean()
    tier(h, 2, 70, 80)
    tier(h, 1, 80, 60)
    tier(h, 1, 80, 60)
    assert check(h.ops).ok


def test_an_acknowledged_write_without_an_offset_must_be_in_the_log():
    h = H()
    h.op("a", "invoke", "send", topic=T, value="a:0", seq=0, idempotent=True)
    h.op("a", "ok", "send", topic=T, value="a:0", partition=0, offset=None)
    h.op("a", "invoke", "send", topic=T, value="a:1", seq=1, idempotent=True)
    h.op("a", "ok", "send", topic=T, value="a:1", partition=0, offset=None)
    h.final(0, ["a:0"])
    r = check(h.ops)
    assert r.found() == {"lost": 1}, r.summary()
    assert r.stats["acked_without_offset"] == 2


# -- transactions and the exactly-once copier -----------------------------------------

IN, OUT = "txn-in", "txn-out"


def txn(h, name, size, outcome, intent=None):
    """A transaction of `size` records "<name>:<i>" to partition i % 2 of IN."""
    values = [f"{name}:{i}" for i in range(size)]
    h.op("tw", "invoke", "txn", txn=name, topic=IN, values=values,
         intent=intent or ("abort" if outcome == "fail" else "commit"))
    if outcome is not None:
        h.op("tw", outcome, "txn", txn=name, topic=IN)
    return values


def txn_final(h, topic, partitions, isolation="read_committed"):
    """`partitions`: {partition: [values in offset order]} (offsets 0, 1, ...)."""
    for p, values in partitions.items():
        for o, v in enumerate(values):
            h.op("final", "ok", "txn-final", topic=topic, partition=p, offset=o, value=v, isolation=isolation)
    return h


def txn_clean():
    """t1 committed (3 records over 2 partitions), t2 aborted, t3 unknown and not
    visible, t4 unknown and visible; the copier copied t1 and t4 into OUT."""
    h = clean()
    txn(h, "t1", 3, "ok")
    txn(h, "t2", 2, "fail")
    txn(h, "t3", 2, "info")
    txn(h, "t4", 1, "info")
    committed = {0: ["t1:0", "t1:2", "t4:0"], 1: ["t1:1"]}
    txn_final(h, IN, committed)
    # The log holds the aborted and unknown records too; read_committed skips them.
    txn_final(h, IN, {0: ["t1:0", "t2:0", "t1:2", "t3:0", "t4:0"], 1: ["t1:1", "t2:1", "t3:1"]},
              isolation="read_uncommitted")
    h.op("test", "info", "copy-config", src=IN, dst=OUT)
    return h, committed


def test_a_clean_transactional_history_has_no_anomalies():
    h, committed = txn_clean()
    txn_final(h, OUT, committed)
    r = check(h.ops)
    assert r.ok, r.summary()
    assert (r.stats["txns_committed"], r.stats["txns_aborted"], r.stats["txns_unknown"]) == (1, 1, 2)
    assert r.stats["txns_unknown_visible"] == 1
    assert r.stats["txn_aborted_records_in_log"] == 2
    assert r.stats["copied_records_read"] == 4


def test_a_record_of_an_aborted_transaction_read_committed_is_an_aborted_read():
    h = H()
    txn(h, "t1", 2, "ok")
    txn(h, "t2", 2, "fail")
    txn_final(h, IN, {0: ["t1:0", "t2:0"], 1: ["t1:1", "t2:1"]})
    assert found(h) == {"aborted-read": 1}


def test_a_transaction_never_asked_to_commit_is_aborted_even_when_its_abort_failed():
    # The writer records fail for a transaction that broke before the commit call:
    # its records are as invisible as those of a deliberate abort.
    h = H()
    txn(h, "t1", 1, "fail", intent="commit")
    txn_final(h, IN, {0: ["t1:0"]})
    assert found(h) == {"aborted-read": 1}


def test_a_committed_transaction_partly_visible_is_torn():
    h = H()
    txn(h, "t1", 3, "ok")
    txn_final(h, IN, {0: ["t1:0", "t1:2"]})  # t1:1 (partition 1) missing
    assert found(h) == {"torn-transaction": 1}


def test_a_transaction_of_unknown_outcome_partly_visible_is_torn():
    h = H()
    txn(h, "t1", 2, "info")
    txn(h, "t2", 2, None)  # never answered at all: unknown too
    txn_final(h, IN, {0: ["t2:0"], 1: ["t1:1"]})
    assert found(h) == {"torn-transaction": 2}


def test_an_aborted_transaction_partly_visible_is_an_aborted_read_and_torn():
    h = H()
    txn(h, "t1", 2, "fail")
    txn_final(h, IN, {1: ["t1:1"]})
    assert found(h) == {"aborted-read": 1, "torn-transaction": 1}


def test_a_committed_transaction_with_nothing_visible_is_lost():
    h = H()
    txn(h, "t1", 2, "ok")
    txn(h, "t2", 2, "ok")
    txn_final(h, IN, {0: ["t1:0"], 1: ["t1:1"]})
    assert found(h) == {"lost-transaction": 1}


def test_a_transactional_record_read_committed_twice_is_a_duplicate():
    h = H()
    txn(h, "t1", 2, "ok")
    txn_final(h, IN, {0: ["t1:0", "t1:0"], 1: ["t1:1"]})
    assert found(h) == {"txn-duplicate": 1}


def test_a_record_no_transaction_wrote_is_a_txn_phantom():
    h = H()
    txn(h, "t1", 1, "ok")
    txn_final(h, IN, {0: ["t1:0", "x:0"]})
    assert found(h) == {"txn-phantom": 1}


def test_a_committed_input_record_missing_from_the_copy_is_copy_lost():
    h, committed = txn_clean()
    txn_final(h, OUT, {0: ["t1:0", "t4:0"], 1: ["t1:1"]})
    assert found(h) == {"copy-lost": 1}


def test_a_record_copied_twice_is_a_copy_duplicate():
    # The copier's transaction was retried after a commit that had gone through.
    h, committed = txn_clean()
    txn_final(h, OUT, {0: ["t1:0", "t1:2", "t1:2", "t4:0"], 1: ["t1:1"]})
    assert found(h) == {"copy-duplicate": 1}


def test_an_aborted_record_in_the_copy_is_a_copy_phantom():
    # A copier that read read_uncommitted (or a broker that served it aborted data).
    h, committed = txn_clean()
    txn_final(h, OUT, {0: ["t1:0", "t2:0", "t1:2", "t4:0"], 1: ["t1:1"]})
    assert found(h) == {"copy-phantom": 1}


def test_a_copy_out_of_input_order_is_a_copy_reorder():
    h, committed = txn_clean()
    txn_final(h, OUT, {0: ["t1:2", "t1:0", "t4:0"], 1: ["t1:1"]})
    assert found(h) == {"copy-reorder": 1}


def test_a_record_copied_to_another_partition_is_a_copy_reorder():
    h, committed = txn_clean()
    txn_final(h, OUT, {0: ["t1:0", "t1:2", "t4:0", "t1:1"]})
    assert found(h) == {"copy-reorder": 1}
