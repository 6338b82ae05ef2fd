"""The clients of a fault run, each recording what it did into the history:
idempotent acks=all producers (threads), group members (subprocesses, member.py),
a reader of the group's committed offsets, and the final read after healing."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

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
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=20)
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
