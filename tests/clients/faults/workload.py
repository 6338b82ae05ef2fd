"""The clients of a fault run, each recording what it did into the history:
idempotent acks=all producers (threads), group members (subprocesses, member.py),
a reader of the group's committed offsets, a transactional writer (thread) and a
consume-transform-produce copier (subprocess, copier.py), and the final reads after
healing."""
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import watermarks

HERE = Path(__file__).parent


class Writer:
    """Sends "<name>:<seq>" to partition seq % partitions at `rate` per second with
    idempotence, acks=all and up to 5 requests in flight. A delivery error is an
    `info` (unknown outcome): a timed-out batch may still have been written. A fatal
    idempotence error ends this producer; a new one takes over under a new name, so
    values never repeat."""

    def __init__(self, history, name, bootstrap, topic, partitions, rate=200, conf=None):
        self.h, self.name, self.topic, self.partitions = history, name, topic, partitions
        self.bootstrap, self.rate, self.conf = bootstrap, rate, conf or {}
        self.stop_flag = threading.Event()
        self.fatal = []
        self.producer_ids = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _producer(self, name):
        def stats(js):
            eos = json.loads(js).get("eos", {})
            if eos.get("producer_id", -1) >= 0:
                self.producer_ids[name] = (eos["producer_id"], eos.get("producer_epoch"))

        conf = {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            # Longer than any fault plus recovery, so faults show as retries, not as
            # unknown outcomes.
            "message.timeout.ms": 90000,
            "topic.metadata.refresh.interval.ms": 1000,
            "statistics.interval.ms": 1000,
            "stats_cb": stats,
        }
        # Diagnosis of a failed run: STRATA_FAULT_CLIENT_DEBUG=eos,msg logs librdkafka's
        # idempotence decisions (epoch bumps, sequence errors) to the test's stderr.
        if debug := os.environ.get("STRATA_FAULT_CLIENT_DEBUG"):
            conf["debug"] = debug
        conf.update(self.conf)
        return Producer(conf)

    def run(self):
        generation = 0
        name = self.name
        p = self._producer(name)
        seq = 0
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_flag.is_set():
            now = time.monotonic()
            if now < next_at:
                p.poll(min(next_at - now, 0.05))
                continue
            next_at += interval
            if now - next_at > 1:  # fell behind (e.g. GIL-starved): do not burst
                next_at = now
            value = f"{name}:{seq}"
            part = seq % self.partitions

            def done(err, msg, value=value, part=part, name=name):
                pid = self.producer_ids.get(name, (None, None))
                if err is None:
                    self.h.record(name, "ok", "send", topic=msg.topic(), partition=msg.partition(),
                                  offset=msg.offset(), value=value, producer_id=pid[0], producer_epoch=pid[1])
                else:
                    self.h.record(name, "info", "send", topic=self.topic, partition=part, value=value,
                                  error=str(err), fatal=err.fatal(), producer_id=pid[0])
                    if err.fatal():
                        self.fatal.append((name, str(err)))

            try:
                p.produce(self.topic, value=value.encode(), key=str(seq).encode(), partition=part, on_delivery=done)
            except BufferError:
                p.poll(0.1)
                continue
            except KafkaException as e:  # fatal state: replace the producer
                self.fatal.append((name, str(e)))
                p.flush(30)
                generation += 1
                name = f"{self.name}.{generation}"
                p = self._producer(name)
                seq = 0
                continue
            self.h.record(name, "invoke", "send", topic=self.topic, partition=part, value=value, seq=seq,
                          idempotent=True)
            seq += 1
            p.poll(0)
            if self.fatal and self.fatal[-1][0] == name:
                p.flush(30)
                generation += 1
                name = f"{self.name}.{generation}"
                p = self._producer(name)
                seq = 0
        remaining = p.flush(120)
        if remaining:
            self.fatal.append((name, f"{remaining} messages not delivered after flush(120)"))

    def stop(self, timeout=180):
        self.stop_flag.set()
        self.thread.join(timeout)


class Member:
    """A group member subprocess writing its own history file."""

    def __init__(self, history_dir, name, bootstrap, topic, group, session_ms=6000):
        self.name = name
        self.history_path = Path(history_dir) / f"{name}.jsonl"
        self.err = open(Path(history_dir) / f"{name}.err", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "member.py"), "--bootstrap", bootstrap, "--topic", topic,
             "--group", group, "--name", name, "--history", str(self.history_path),
             "--session-ms", str(session_ms)],
            stdout=self.err, stderr=self.err)

    def pause(self):
        self.proc.send_signal(19)  # SIGSTOP

    def resume(self):
        self.proc.send_signal(18)  # SIGCONT

    def stop(self):
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class CommittedReader:
    """Reads the group's committed offsets every `interval` s without joining it."""

    def __init__(self, history, bootstrap, topic, partitions, group, interval=0.5):
        self.h, self.topic, self.partitions, self.group = history, topic, partitions, group
        self.interval = interval
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def run(self):
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        while not self.stop_flag.wait(self.interval):
            t = time.monotonic()
            try:
                got = self.c.committed(tps, timeout=5)
            except KafkaException as e:
                self.h.record("committed-reader", "fail", "committed", group=self.group, topic=self.topic,
                              error=str(e), invoke_time=t)
                continue
            offsets = {str(tp.partition): tp.offset for tp in got if tp.error is None}
            self.h.record("committed-reader", "ok", "committed", group=self.group, topic=self.topic,
                          offsets=offsets, invoke_time=t)

    def stop(self):
        if self.stop_flag.is_set():
            return
        self.stop_flag.set()
        self.thread.join(30)
        self.c.close()


def final_read(history, bootstrap, topic, partitions, timeout=120):
    """Reads every partition from offset 0 to its high watermark with a fresh consumer
    (no group), recording each record. Raises if a partition cannot be read to the
    end: the checker needs the whole log."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"final-{time.time()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        highs = {}
        for p in range(partitions):
            low, high = watermarks(c, TopicPartition(topic, p))
            assert low == 0, f"partition {p} starts at {low}: records were deleted"
            highs[p] = high
            history.record("final", "info", "final-end", topic=topic, partition=p, high=high)
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions) if highs[p] > 0])
        nxt = {p: 0 for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while any(nxt[p] < highs[p] for p in nxt) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                if m.error():
                    continue
                p = m.partition()
                if m.offset() >= highs[p]:
                    continue
                history.record("final", "ok", "final", topic=topic, partition=p, offset=m.offset(),
                               value=m.value().decode())
                nxt[p] = m.offset() + 1
        short = {p: (nxt[p], highs[p]) for p in nxt if nxt[p] < highs[p]}
        assert not short, f"final read stopped short (next, high): {short}"
        return highs
    finally:
        c.close()


class TxnWriter:
    """Writes "<name>:<txn>:<i>" (i < a random size of 1-12) to partition i % partitions
    of its own topic in one transaction each, `pause` s after the previous one ended,
    and aborts about one in four on purpose. Each transaction is a `txn` invoke {txn,
    topic, values, intent}, then ok (committed), fail (aborted: on purpose, or it
    failed before the commit was asked for, so it cannot have committed) or info
    (unknown: the commit call failed or timed out). A producer that cannot go on
    (fatal error, failed abort) is replaced by a new one with the same
    transactional.id, whose initialisation fences it and aborts what it left open."""

    def __init__(self, history, name, bootstrap, topic, partitions, txn_id, pause=0.1, seed=0):
        self.h, self.name, self.topic, self.partitions = history, name, topic, partitions
        self.bootstrap, self.txn_id, self.pause = bootstrap, txn_id, pause
        self.rng = random.Random(seed)
        self.stop_flag = threading.Event()
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.producers = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _producer(self):
        while not self.stop_flag.is_set():
            p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": self.txn_id,
                          "transaction.timeout.ms": 20000, "message.timeout.ms": 20000, "linger.ms": 5,
                          "topic.metadata.refresh.interval.ms": 1000})
            try:
                p.init_transactions(30)
                self.producers += 1
                self.h.record(self.name, "info", "txn-init", txn_id=self.txn_id, generation=self.producers)
                return p
            except KafkaException as e:
                self.h.record(self.name, "info", "txn-init-failed", error=str(e.args[0]))
                self.stop_flag.wait(1)
        return None

    def _end(self, type_, txn, **fields):
        self.counts[type_] += 1
        self.h.record(self.name, type_, "txn", txn=txn, topic=self.topic, **fields)

    def run(self):
        p = self._producer()
        n = 0
        while p is not None and not self.stop_flag.wait(self.pause):
            n += 1
            txn = f"{self.name}:{n}"
            size = self.rng.randint(1, 12)
            abort = self.rng.random() < 0.25
            values = [f"{txn}:{i}" for i in range(size)]
            committing = False
            try:
                p.begin_transaction()
                self.h.record(self.name, "invoke", "txn", txn=txn, topic=self.topic, values=values,
                              intent="abort" if abort else "commit")
                for i, v in enumerate(values):
                    p.produce(self.topic, value=v.encode(), partition=i % self.partitions)
                if abort:
                    # Delivered first: an abort purges what is still queued, and the
                    # records of an aborted transaction should be in the log (for
                    # read_committed to skip), not only in the history.
                    p.flush(30)
                    p.abort_transaction(30)
                    self._end("fail", txn, deliberate=True)
                    continue
                committing = True
                for attempt in range(3):
                    try:
                        p.commit_transaction(30)
                        break
                    except KafkaException as e:
                        if not e.args[0].retriable() or attempt == 2:
                            raise
                self._end("ok", txn)
                continue
            except (KafkaException, BufferError) as e:
                err = e.args[0] if isinstance(e, KafkaException) else None
                # Begun but not asked to commit: it cannot have committed.
                self._end("info" if committing else "fail", txn, error=str(err or e),
                          fatal=bool(err and err.fatal()))
            try:
                if err is not None and err.fatal():
                    raise KafkaException(err)
                p.abort_transaction(30)
            except KafkaException as e:
                self.h.record(self.name, "info", "txn-abort-failed", error=str(e.args[0]))
                p = self._producer()

    def stop(self, timeout=120):
        self.stop_flag.set()
        self.thread.join(timeout)


class Copier:
    """The consume-transform-produce copier subprocess (copier.py): `src` to `dst`
    exactly once, with its own history file. kill() is kill -9; restart() starts a
    new process with the same transactional.id and group (the heal of `kill-copier`)."""

    def __init__(self, history_dir, name, bootstrap, src, dst, group, txn_id):
        self.name, self.bootstrap, self.src, self.dst = name, bootstrap, src, dst
        self.group, self.txn_id = group, txn_id
        self.history_path = Path(history_dir) / f"{name}.jsonl"
        self.err = open(Path(history_dir) / f"{name}.err", "ab")
        self.proc = None
        self.starts = 0
        self.start()

    def start(self):
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "copier.py"), "--bootstrap", self.bootstrap, "--src", self.src,
             "--dst", self.dst, "--group", self.group, "--txn-id", self.txn_id,
             "--name", f"{self.name}.{self.starts}", "--history", str(self.history_path)],
            stdout=self.err, stderr=self.err)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def restart(self):
        if not self.alive():
            self.start()

    def dump_stacks(self):
        """Asks the copier for its threads' stacks (faulthandler, into its .err file)."""
        if self.alive():
            self.proc.send_signal(10)  # SIGUSR1

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def committed(self, partitions, timeout=10):
        """The group's committed offsets of `src` (stable ones: a read_committed
        consumer asks with require_stable)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            got = c.committed([TopicPartition(self.src, p) for p in range(partitions)], timeout=timeout)
            return {tp.partition: tp.offset for tp in got if tp.error is None}
        finally:
            c.close()


def _ends(bootstrap, topic, partitions, isolation):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{time.time()}",
                  "isolation.level": isolation})
    try:
        return {p: watermarks(c, TopicPartition(topic, p))[1] for p in range(partitions)}
    finally:
        c.close()


def txn_final_read(history, bootstrap, topic, partitions, timeout=120):
    """Reads a topic written in transactions from offset 0 to its end twice, with
    read_committed and with read_uncommitted, recording each record as `txn-final`
    {isolation}. First waits (bounded) until no transaction is open on it: the last
    stable offset (the end a read_committed client is told) equals the high
    watermark. Raises if that does not happen or a read stops short."""
    deadline = time.monotonic() + timeout
    while True:
        high = _ends(bootstrap, topic, partitions, "read_uncommitted")
        lso = _ends(bootstrap, topic, partitions, "read_committed")
        if lso == high:
            break
        assert time.monotonic() < deadline, f"{topic}: transactions still open, LSO {lso} < high {high}"
        time.sleep(0.5)
    for p in range(partitions):
        history.record("final", "info", "txn-final-end", topic=topic, partition=p, high=high[p], lso=lso[p])
    counts = {}
    for isolation in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"final-{time.time()}",
                      "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": isolation})
        try:
            todo = {p for p in range(partitions) if high[p] > 0}
            c.assign([TopicPartition(topic, p, 0) for p in todo])
            n = 0
            while todo and time.monotonic() < deadline:
                for m in c.consume(num_messages=1000, timeout=1.0):
                    if m.error():
                        # The end of the log: control batches may follow the last record.
                        if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= high[m.partition()]:
                            todo.discard(m.partition())
                        continue
                    history.record("final", "ok", "txn-final", topic=topic, partition=m.partition(),
                                   offset=m.offset(), value=m.value().decode(), isolation=isolation)
                    n += 1
            assert not todo, f"{isolation} final read of {topic} stopped short on partitions {sorted(todo)}"
            counts[isolation] = n
        finally:
            c.close()
    return counts


class TierSampler:
    """Every `interval` s asks each live broker for its own view of `topic` and records,
    per partition it holds a replica of, its local log start and the committed remote
    log end (`tier-state`). The checker pairs each sample with the next one of the same
    broker: offsets below a local start must be in the tier by then, or a local
    segment was deleted before its upload was committed."""

    def __init__(self, history, cluster, topic, interval=3.0):
        self.h, self.c, self.topic, self.interval = history, cluster, topic, interval
        self.stop_flag = threading.Event()
        self.samples = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def run(self):
        while not self.stop_flag.wait(self.interval):
            for b in list(self.c.all_brokers().values()):
                if self.stop_flag.is_set() or not b.alive() or b.paused:
                    continue
                try:
                    d = self.c.cli_at(b, "topic", "describe", self.topic, timeout=5)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError):
                    continue
                for p in d["partition_details"]:
                    if p.get("log_start_offset", -1) < 0:
                        continue  # no local replica there
                    self.h.record("tier-sampler", "ok", "tier-state", topic=self.topic, broker=b.id,
                                  partition=p.get("partition", 0), local_start=p.get("local_start_offset", 0),
                                  remote_start=p.get("remote_start_offset", -1),
                                  remote_end=p.get("remote_end_offset", -1))
                    self.samples += 1

    def stop(self):
        self.stop_flag.set()
        self.thread.join(30)


_probes = [0]


def tier_probe(history, bootstrap, topic, partition, offset, timeout=3.0, want=50):
    """Reads up to `want` records of `partition` from `offset` with a fresh consumer
    (no group) for at most `timeout` s, recording each as a `read` of its own process
    (so the checker compares the values with the final read). Returns how many."""
    _probes[0] += 1
    name = f"tier-probe-{_probes[0]}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": name, "enable.auto.commit": False,
                  "fetch.wait.max.ms": 200})
    got, errors = 0, []
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while got < want and time.monotonic() < deadline:
            for m in c.consume(num_messages=want, timeout=min(0.5, max(0.05, deadline - time.monotonic()))):
                if m.error():
                    errors.append(str(m.error()))
                    continue
                history.record(name, "ok", "read", topic=topic, partition=m.partition(), offset=m.offset(),
                               value=m.value().decode(), assignment=0)
                got += 1
    finally:
        c.close()
    history.record(name, "info", "tier-probe", topic=topic, partition=partition, offset=offset, got=got,
                   errors=errors[:3])
    return got
