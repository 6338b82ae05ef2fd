"""The checker: pure functions over a history (a list of operation dicts, see
history.py) that return the anomalies it contains. Nothing here talks to a broker, so
test_fault_checker.py feeds it hand-written histories holding each anomaly.

Operations it reads (others are ignored):
  send     invoke {value, seq, idempotent}; ok {topic, partition, offset, value};
           fail / info {value, error} (info: may or may not have been written). An
           ok whose offset is None was acknowledged without an offset (librdkafka
           reports a retry answered DUPLICATE_SEQUENCE_NUMBER so: written before, at
           an offset it does not know): it must be in the log, at any offset
  read     ok {process, topic, partition, offset, value, assignment} - a group
           member's poll; `assignment` counts the member's assignments, so offsets are
           compared only within one assignment
  final    ok {topic, partition, offset, value} - the final read from offset 0 after
           healing, by a fresh consumer
  final-end info {topic, partition, high} - the high watermark the final read reached
  commit   invoke / ok / fail {group, topic, offsets: {partition: offset}}
  committed ok {group, topic, offsets, invoke_time} - a committed-offsets read
  tier-state ok {broker, topic, partition, local_start, remote_end} - one broker's
           local log start of a tiered partition and the committed remote log end
           (one past its last offset, -1 when nothing was uploaded), as it saw them
  txn      invoke {txn, topic, values, intent}; ok (committed) / fail (aborted, or
           never asked to commit) / info (unknown: the commit call failed) {txn} -
           a transactional writer's transaction
  txn-final ok {topic, partition, offset, value, isolation} - the final reads of a
           topic written in transactions, read_committed and read_uncommitted
  copy-config info {src, dst} - `dst` is the exactly-once copy of `src` (same
           partition)

Anomaly classes (the keys of the result):
  lost                  an acknowledged write is not in the final read
  ack-mismatch          the final read holds a different value at the acknowledged
                        offset (the write is elsewhere, or overwritten)
  duplicate             an idempotent producer's value is in the log more than once
  inconsistent-offset   two observers saw different values at one partition offset
  phantom               a value in the log that no producer ever tried to send
  producer-reorder      an idempotent producer's writes to a partition are in the log
                        in another order than they were sent
  consumer-backwards    within one assignment a member read an offset not above the
                        previous one it read of that partition
  consumer-skip         within one assignment a member jumped over offsets that the
                        final read shows exist (it missed records)
  commit-backwards      committed offsets read later were lower than ones read or
                        acknowledged earlier
  tier-gap              a broker's local log of a tiered partition started above
                        the end of the committed remote log that any broker showed
                        up to that broker's next sample: offsets were deleted locally
                        before their upload was committed
  aborted-read          a record of an aborted transaction is in the read_committed
                        final read
  torn-transaction      some but not all records of a transaction are in the
                        read_committed final read (whatever its outcome)
  lost-transaction      no record of a committed transaction is in the
                        read_committed final read
  txn-duplicate         a transactional record is in the read_committed final read
                        more than once
  txn-phantom           a record in the read_committed final read of a
                        transactional topic that no transaction wrote
  copy-lost             a record of the copier's committed input is missing from the
                        read_committed output
  copy-duplicate        a record is in the read_committed output more than once
  copy-phantom          a record in the read_committed output that is not in the
                        committed input (an aborted record was copied, or a copy
                        without its source)
  copy-reorder          an output partition holds its input partition's records in
                        another order, or another partition's
"""
import bisect
from collections import defaultdict

ANOMALIES = (
    "lost",
    "ack-mismatch",
    "duplicate",
    "inconsistent-offset",
    "phantom",
    "producer-reorder",
    "consumer-backwards",
    "consumer-skip",
    "commit-backwards",
    "tier-gap",
    "aborted-read",
    "torn-transaction",
    "lost-transaction",
    "txn-duplicate",
    "txn-phantom",
    "copy-lost",
    "copy-duplicate",
    "copy-phantom",
    "copy-reorder",
)

# Enough examples per class to debug from; the counts stay exact.
MAX_EXAMPLES = 20


class Result:
    def __init__(self):
        self.anomalies = {name: [] for name in ANOMALIES}
        self.counts = {name: 0 for name in ANOMALIES}
        self.stats = {}

    def add(self, name, **example):
        self.counts[name] += 1
        if len(self.anomalies[name]) < MAX_EXAMPLES:
            self.anomalies[name].append(example)

    @property
    def ok(self):
        return not any(self.counts.values())

    def found(self):
        return {k: v for k, v in self.counts.items() if v}

    def summary(self):
        lines = [f"stats: {self.stats}"]
        for name in ANOMALIES:
            if self.counts[name]:
                lines.append(f"{name}: {self.counts[name]}, e.g. {self.anomalies[name][:3]}")
        return "\n".join(lines)


def _int_keys(offsets):
    return {int(p): int(o) for p, o in offsets.items()}


def check(ops):
    ops = sorted(ops, key=lambda op: op["time"])
    r = Result()
    _check_log(ops, r)
    _check_reads(ops, r)
    _check_commits(ops, r)
    _check_tier(ops, r)
    _check_txns(ops, r)
    _check_copies(ops, r)
    return r


def _check_log(ops, r):
    """Acknowledged writes against the final read, duplicates, phantoms, order."""
    invoked = {}  # value -> send invoke op
    acked = {}  # value -> send ok op
    unknown = 0
    failed = 0
    final = {}  # (topic, partition) -> {offset: value}
    for op in ops:
        f, t = op["f"], op["type"]
        if f == "send":
            if t == "invoke":
                invoked[op["value"]] = op
            elif t == "ok":
                acked[op["value"]] = op
            elif t == "info":
                unknown += 1
            elif t == "fail":
                failed += 1
        elif f == "final" and t == "ok":
            final.setdefault((op["topic"], op["partition"]), {})[op["offset"]] = op["value"]

    where = defaultdict(list)  # value -> [(topic, partition, offset)] in the final read
    for (topic, p), log in final.items():
        for o, v in log.items():
            where[v].append((topic, p, o))

    for v, ok in acked.items():
        log = final.get((ok["topic"], ok["partition"]), {})
        at = log.get(ok["offset"])
        if at == v or (ok["offset"] is None and any(
                (t, p) == (ok["topic"], ok["partition"]) for t, p, _ in where.get(v, ()))):
            continue
        if not where.get(v):
            r.add("lost", value=v, topic=ok["topic"], partition=ok["partition"], offset=ok["offset"],
                  final_value_at_offset=at)
        else:
            r.add("ack-mismatch", value=v, acked=(ok["topic"], ok["partition"], ok["offset"]),
                  final_value_at_offset=at, found_at=where[v])

    for v, places in where.items():
        inv = invoked.get(v)
        if inv is None:
            r.add("phantom", value=v, at=places)
            continue
        if len(places) > 1 and inv.get("idempotent"):
            r.add("duplicate", value=v, process=inv["process"], at=sorted(places))

    # Per idempotent producer and partition: log order must follow send order.
    by_producer = defaultdict(list)  # (process, topic, partition) -> [(offset, seq, value)]
    for v, places in where.items():
        inv = invoked.get(v)
        if inv is None or not inv.get("idempotent"):
            continue
        topic, p, o = min(places)
        by_producer[(inv["process"], topic, p)].append((o, inv["seq"], v))
    for (process, topic, p), writes in by_producer.items():
        writes.sort()
        for (o1, s1, v1), (o2, s2, v2) in zip(writes, writes[1:]):
            if s2 < s1:
                r.add("producer-reorder", process=process, topic=topic, partition=p,
                      earlier=(o1, v1), later=(o2, v2))

    r.stats.update(
        sends=len(invoked), acked=len(acked), unknown=unknown, failed=failed,
        acked_without_offset=sum(1 for ok in acked.values() if ok["offset"] is None),
        final_records=sum(len(log) for log in final.values()),
    )


def _check_reads(ops, r):
    """One value per offset across every observer; member reads move forward."""
    seen = {}  # (topic, partition, offset) -> (value, who)
    final_offsets = defaultdict(set)

    def observe(topic, p, o, v, who):
        key = (topic, p, o)
        if key in seen and seen[key][0] != v:
            r.add("inconsistent-offset", topic=topic, partition=p, offset=o,
                  values=[seen[key], (v, who)])
        else:
            seen.setdefault(key, (v, who))

    for op in ops:
        if op["type"] != "ok":
            continue
        if op["f"] == "send":
            if op["offset"] is not None:
                observe(op["topic"], op["partition"], op["offset"], op["value"], f"ack:{op['process']}")
        elif op["f"] == "final":
            observe(op["topic"], op["partition"], op["offset"], op["value"], "final")
            final_offsets[(op["topic"], op["partition"])].add(op["offset"])
        elif op["f"] == "read":
            observe(op["topic"], op["partition"], op["offset"], op["value"], f"read:{op['process']}")

    last = {}  # (process, assignment, topic, partition) -> offset
    reads = 0
    for op in ops:
        if op["f"] != "read" or op["type"] != "ok":
            continue
        reads += 1
        key = (op["process"], op["assignment"], op["topic"], op["partition"])
        o = op["offset"]
        if key in last:
            prev = last[key]
            if o <= prev:
                r.add("consumer-backwards", process=op["process"], assignment=op["assignment"],
                      topic=op["topic"], partition=op["partition"], previous=prev, offset=o)
            else:
                present = final_offsets.get((op["topic"], op["partition"]), set())
                missed = [x for x in range(prev + 1, o) if x in present]
                if missed:
                    r.add("consumer-skip", process=op["process"], assignment=op["assignment"],
                          topic=op["topic"], partition=op["partition"], previous=prev, offset=o,
                          missed=missed[:10])
        last[key] = max(o, last.get(key, o))
    r.stats["reads"] = reads


def _check_commits(ops, r):
    """Committed offsets only move forward. An acknowledged commit and a completed
    read of the committed offsets each set a floor from the moment they completed; a
    read, or an acknowledged commit, that began after that must not show less. (A
    read may be slow: its value held at some point between its invocation and its
    completion, so it is judged against floors set before it began.) A commit
    acknowledged below an earlier one means the coordinator accepted a stale member:
    our members only commit positions, which a current generation never moves back."""
    started = {}  # process -> invoke time of its commit in flight (members commit synchronously)
    events = []  # (time, order, kind, op, start): floors set (0) before checks (1) at one time
    commits = rejected = 0
    for op in ops:
        if op["f"] == "commit":
            if op["type"] == "invoke":
                started[op["process"]] = op["time"]
                continue
            begin = started.pop(op["process"], op["time"])
            if op["type"] == "ok":
                commits += 1
                events.append((begin, 1, "commit", op, begin))
                events.append((op["time"], 0, "commit", op, begin))
            elif op["type"] == "fail":
                rejected += 1
        elif op["f"] == "committed" and op["type"] == "ok":
            events.append((op["invoke_time"], 1, "read", op, op["invoke_time"]))
            events.append((op["time"], 0, "read", op, op["invoke_time"]))
    events.sort(key=lambda e: (e[0], e[1]))
    floor = {}  # (group, topic, partition) -> (offset, who, completed at)
    for t, order, kind, op, begin in events:
        for p, o in _int_keys(op["offsets"]).items():
            if o < 0:
                continue  # nothing committed on this partition yet
            key = (op["group"], op["topic"], p)
            if order == 1:
                if key in floor and o < floor[key][0]:
                    r.add("commit-backwards", group=op["group"], topic=op["topic"], partition=p,
                          offset=o, by=f"{kind}:{op['process']}", began=begin, earlier=floor[key])
            elif o >= floor.get(key, (-1,))[0]:
                floor[key] = (o, f"{kind}:{op['process']}", t)
    r.stats.update(commits=commits, commits_rejected=rejected,
                   committed_reads=sum(1 for e in events if e[2] == "read" and e[1] == 0))


def _check_tier(ops, r):
    """A local segment of a tiered partition is deleted only after its upload is
    committed, so the offsets below a broker's local log start are in the committed
    remote log. The committed remote end is only ever read through some broker's
    applied metadata, which may lag (a broker just reconnected deletes what its
    leader deleted before it has applied the upload's commit), and one sample reads
    the remote end before the local start. So a local start is judged against the
    largest remote end any broker showed up to the next sample of the same broker:
    the committed remote end only grows, and no broker shows one not committed."""
    samples = defaultdict(list)  # (broker, topic, partition) -> [op]
    ends = defaultdict(list)  # (topic, partition) -> [(time, remote_end)] of every broker
    for op in ops:
        if op["f"] == "tier-state" and op["type"] == "ok":
            samples[(op["broker"], op["topic"], op["partition"])].append(op)
            ends[(op["topic"], op["partition"])].append((op["time"], op["remote_end"]))
    known = {}  # (topic, partition) -> (times, running max of remote_end)
    for key, seq in ends.items():
        seq.sort()
        running, best = [], -1
        for _, e in seq:
            best = max(best, e)
            running.append(best)
        known[key] = ([t for t, _ in seq], running)
    for (broker, topic, p), seq in samples.items():
        times, running = known[(topic, p)]
        for a, b in zip(seq, seq[1:]):
            i = bisect.bisect_right(times, b["time"]) - 1
            bound = running[i] if i >= 0 else -1
            if a["local_start"] > max(bound, 0):
                r.add("tier-gap", broker=broker, topic=topic, partition=p, local_start=a["local_start"],
                      remote_end_known=bound, at=a["time"])
    r.stats["tier_samples"] = sum(len(v) for v in samples.values())
    all_ends = [e for seq in ends.values() for _, e in seq]
    r.stats["tier_max_remote_end"] = max(all_ends) if all_ends else -1
    starts = [op["local_start"] for seq in samples.values() for op in seq]
    r.stats["tier_max_local_start"] = max(starts) if starts else -1


def _txn_final(ops, isolation="read_committed"):
    """(topic -> {partition -> [(offset, value)] in offset order}) of a final read."""
    out = defaultdict(lambda: defaultdict(list))
    for op in ops:
        if op["f"] == "txn-final" and op["type"] == "ok" and op["isolation"] == isolation:
            out[op["topic"]][op["partition"]].append((op["offset"], op["value"]))
    for parts in out.values():
        for recs in parts.values():
            recs.sort()
    return out


def _check_txns(ops, r):
    """Each transaction of a transactional writer is all visible to read_committed or
    not at all: all if it committed, none if it aborted, either if its outcome is
    unknown; and nothing else is visible."""
    txns = {}  # txn -> invoke op
    outcome = {}  # txn -> ok / fail / info
    for op in ops:
        if op["f"] != "txn":
            continue
        if op["type"] == "invoke":
            txns[op["txn"]] = op
        else:
            outcome[op["txn"]] = op["type"]
    committed = _txn_final(ops)
    uncommitted = _txn_final(ops, "read_uncommitted")
    owner = {v: t for t, inv in txns.items() for v in inv["values"]}
    topics = {inv["topic"] for inv in txns.values()}
    seen = defaultdict(list)  # value -> [(partition, offset)] in the read_committed read
    for topic in topics:
        for p, recs in committed.get(topic, {}).items():
            for o, v in recs:
                seen[v].append((p, o))
                if v not in owner:
                    r.add("txn-phantom", topic=topic, partition=p, offset=o, value=v)
    for v, places in seen.items():
        if len(places) > 1:
            r.add("txn-duplicate", value=v, at=sorted(places))
    for t, inv in txns.items():
        got = [v for v in inv["values"] if v in seen]
        kind = outcome.get(t, "info")  # never answered: unknown
        if kind == "fail" and got:
            r.add("aborted-read", txn=t, topic=inv["topic"], visible=got[:10], of=len(inv["values"]))
        if got and len(got) < len(inv["values"]):
            r.add("torn-transaction", txn=t, topic=inv["topic"], outcome=kind, visible=len(got),
                  of=len(inv["values"]), missing=[v for v in inv["values"] if v not in seen][:10])
        elif kind == "ok" and not got:
            r.add("lost-transaction", txn=t, topic=inv["topic"], values=inv["values"][:10])
    by = defaultdict(int)
    for t in txns:
        by[outcome.get(t, "info")] += 1
    aborted_values = {v for t, inv in txns.items() if outcome.get(t) == "fail" for v in inv["values"]}
    r.stats.update(
        txns=len(txns), txns_committed=by["ok"], txns_aborted=by["fail"], txns_unknown=by["info"],
        txns_unknown_visible=sum(1 for t, inv in txns.items() if outcome.get(t, "info") == "info"
                                 and any(v in seen for v in inv["values"])),
        txn_records_committed_read=sum(len(x) for x in seen.values()),
        # Records of aborted transactions that the log holds (read_uncommitted): what
        # read_committed had to skip.
        txn_aborted_records_in_log=sum(1 for topic in topics for recs in uncommitted.get(topic, {}).values()
                                       for _, v in recs if v in aborted_values),
    )


def _check_copies(ops, r):
    """The read_committed output of an exactly-once copier is its read_committed input,
    partition by partition, in order: nothing lost, duplicated or made up."""
    committed = _txn_final(ops)
    copies = 0
    for op in ops:
        if op["f"] != "copy-config":
            continue
        src, dst = committed.get(op["src"], {}), committed.get(op["dst"], {})
        inputs = {v: p for p, recs in src.items() for _, v in recs}
        outputs = defaultdict(list)
        for p, recs in dst.items():
            for o, v in recs:
                outputs[v].append((p, o))
        for v, p in inputs.items():
            if v not in outputs:
                r.add("copy-lost", src=op["src"], dst=op["dst"], value=v, partition=p)
        for v, places in outputs.items():
            if len(places) > 1:
                r.add("copy-duplicate", dst=op["dst"], value=v, at=sorted(places))
            if v not in inputs:
                r.add("copy-phantom", dst=op["dst"], value=v, at=sorted(places))
        for p in set(src) | set(dst):
            want = [v for _, v in src.get(p, [])]
            got = [v for _, v in dst.get(p, [])]
            # Only what is copied once and belongs here is compared for order (the
            # other cases are reported above).
            mine = [v for v in got if inputs.get(v) == p and len(outputs[v]) == 1]
            strays = [v for v in got if v in inputs and inputs[v] != p]
            if strays or mine != [v for v in want if v in set(mine)]:
                r.add("copy-reorder", src=op["src"], dst=op["dst"], partition=p,
                      from_other_partitions=strays[:10])
        copies += sum(len(x) for x in outputs.values())
    r.stats["copied_records_read"] = copies
