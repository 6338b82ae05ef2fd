"""The nemesis: a fault schedule drawn from a seed, and the code that applies and
heals each fault, recording both in the history.

The seed fixes the schedule (which kinds, in which order, for how long, aimed at which
partition or broker slot); it cannot fix what the cluster does in between, so "the
leader of partition 1" is looked up when the fault starts. Faults run one at a time;
after each, the cluster is healed and must be fully replicated again before the next,
so every fault starts from a healthy cluster and a failure points at one fault."""
import random
import subprocess
import time

PROCESS_FAULTS = ("kill-partition-leader", "kill-controller", "pause-broker", "pause-member")
NET_FAULTS = ("cut-broker", "lossy-broker")
# A broker joins, takes a partition, is drained and leaves (any cluster).
MEMBERSHIP_FAULTS = ("join-leave-broker",)
# Brokers' data dirs on tmpfs (root).
DISK_FAULTS = ("disk-full",)
# The tier on SeaweedFS behind the delaying proxy.
# s3-outage: the server stopped (requests hang); s3-down: connections refused (requests
# fail at once); s3-slow: every chunk delayed.
TIER_FAULTS = ("s3-outage", "s3-slow", "s3-down")
# With the transactional workload: kill -9 of the copier (restarted after the hold)
# and of the transaction coordinator of the writer's or the copier's transactional.id.
TXN_FAULTS = ("kill-copier", "kill-txn-coordinator")


def offsets_partition(group, partitions):
    """The __consumer_offsets partition of an ASCII group id: Java's String.hashCode
    modulo the partition count, as the broker computes it."""
    h = 0
    for ch in group:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return 0 if h == -(1 << 31) else abs(h) % partitions


def kinds(has_net, has_disk=False, has_tier=False, membership=False, txn=False):
    return (PROCESS_FAULTS + (NET_FAULTS if has_net else ()) + (MEMBERSHIP_FAULTS if membership else ())
            + (DISK_FAULTS if has_disk else ()) + (TIER_FAULTS if has_tier else ())
            + (TXN_FAULTS if txn else ()))


def schedule(seed, seconds, has_net, partitions, brokers, each_once=False, has_disk=False, has_tier=False,
             membership=False, txn=False):
    """[(kind, params)] whose hold times add up to about `seconds`. With `each_once`
    every kind appears exactly once, in a seeded order, and `seconds` is ignored: the
    short profile covers every kind in the least time."""
    rng = random.Random(seed)
    available = list(kinds(has_net, has_disk, has_tier, membership, txn))
    out, total = [], 0.0
    if each_once:
        bag = available[:]
        rng.shuffle(bag)
    for _ in range(len(available) if each_once else 100000):
        if each_once:
            kind = bag.pop()
        elif total >= seconds:
            break
        else:
            kind = rng.choice(available)
        if kind in ("pause-broker",):
            hold = rng.uniform(4.0, 8.0)  # past broker_session_timeout_ms (3 s)
        elif kind == "pause-member":
            hold = rng.uniform(8.0, 11.0)  # past the members' session timeout (6 s)
        elif kind in TIER_FAULTS:
            hold = rng.uniform(6.0, 12.0)  # several upload rounds (1 s) and segment rolls (4 s)
        else:
            hold = rng.uniform(2.0, 8.0)
        params = {"hold": round(hold, 2), "partition": rng.randrange(partitions),
                  "broker": rng.choice(brokers), "member": rng.randrange(1 << 16)}
        if kind == "lossy-broker":
            params["percent"] = rng.choice((10, 20, 30, 40))
        if kind == "s3-slow":
            params["delay"] = rng.choice((0.2, 0.5, 1.0, 2.0))
        out.append((kind, params))
        total += hold + 3
    return out


class Nemesis:
    """Applies and heals the faults of a plan. `tier_topic` is the tiered topic the
    object-store faults probe (reads of offsets that are only in the tier).
    `copier` is the transactional workload's Copier and `txn_ids` the transactional
    ids whose coordinators `kill-txn-coordinator` aims at."""

    def __init__(self, cluster, history, topics, members=(), tier_topic=None, copier=None, txn_ids=(),
                 txn_state_partitions=None):
        self.c, self.h, self.topics, self.members = cluster, history, topics, list(members)
        self.tier_topic = tier_topic
        self.copier, self.txn_ids = copier, list(txn_ids)
        if txn_state_partitions is None:
            from faults.cluster import TXN_STATE_PARTITIONS as txn_state_partitions
        self.txn_state_partitions = txn_state_partitions
        self.applied = []
        self.joined = None
        self.filled = None
        self.probes = 0

    def run(self, plan, recover_timeout=90):
        for kind, params in plan:
            self.apply(kind, params)
            time.sleep(params["hold"] / 2)
            self.during(kind, params)
            time.sleep(params["hold"] / 2)
            self.heal(kind)
            self.after(kind, params)
            self.wait_recovered(recover_timeout)
            time.sleep(1.0)

    def apply(self, kind, params):
        c = self.c
        target = None
        extra = {}
        if kind == "kill-partition-leader":
            target = c.leader(self.topics[0], params["partition"])
            if target in c.brokers:
                c.brokers[target].kill()
        elif kind == "kill-controller":
            target = c.controller()
            if target in c.brokers:
                c.brokers[target].kill()
        elif kind == "pause-broker":
            target = params["broker"]
            c.brokers[target].pause()
        elif kind == "cut-broker":
            target = params["broker"]
            c.net.cut(target, [i for i in c.ids if i != target])
        elif kind == "lossy-broker":
            target = params["broker"]
            c.net.loss(target, params["percent"])
        elif kind == "pause-member":
            if self.members:
                m = self.members[params["member"] % len(self.members)]
                target = m.name
                m.pause()
        elif kind == "disk-full":
            target = params["broker"]
            self.filled = target
            extra["filled_bytes"] = c.fill_disk(target)
        elif kind == "s3-outage":
            c.s3.pause()
            target = "s3"
        elif kind == "s3-down":
            c.s3.refuse()
            target = "s3"
        elif kind == "s3-slow":
            c.s3.slow(params["delay"])
            target = "s3"
        elif kind == "join-leave-broker":
            target, extra = self._join(params)
        elif kind == "kill-copier":
            if self.copier is not None:
                target = self.copier.name
                self.copier.kill()
        elif kind == "kill-txn-coordinator":
            if self.txn_ids:
                txn_id = self.txn_ids[params["member"] % len(self.txn_ids)]
                p = offsets_partition(txn_id, self.txn_state_partitions)
                target = c.leader("__transaction_state", p)
                extra = {"transactional_id": txn_id, "txn_state_partition": p}
                if target in c.brokers:
                    c.brokers[target].kill()
        self.h.record("nemesis", "info", "nemesis", fault=kind, phase="start", target=target, **params, **extra)
        self.applied.append((kind, target, params))

    def _join(self, params):
        """A new broker starts and becomes the preferred leader of one partition of
        the first topic (its first replica is replaced), under load; returns when the
        move is complete (bounded)."""
        c, topic, p = self.c, self.topics[0], params["partition"]
        new = c.add_broker()
        self.joined = new
        self.h.record("nemesis", "info", "nemesis", fault="join-leave-broker", phase="joined", target=new)
        replicas = c.cli("topic", "describe", topic)["partition_details"][p]["replicas"]
        target = [new, *replicas[1:]]
        c.cli("topic", "reassign", topic, str(p), "--replicas", ",".join(map(str, target)))
        deadline = time.monotonic() + 90
        while True:
            d = c.cli("topic", "describe", topic)["partition_details"][p]
            if sorted(d["replicas"]) == sorted(target) and sorted(d["isr"]) == sorted(target):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"reassignment of {topic}-{p} onto broker {new} not done in 90s: {d}")
            time.sleep(0.5)
        return new, {"moved": f"{topic}-{p}", "from": replicas, "to": target, "leader": d["leader"]}

    def during(self, kind, params):
        """Mid-hold: a read of tiered offsets while the object store is out or slow.
        Its outcome is recorded, not judged (the chunk cache may serve it); what it
        reads is checked against the final read like any read."""
        if kind in TIER_FAULTS and self.tier_topic:
            self._probe(params, timeout=3.0)

    def after(self, kind, params):
        """After healing: tiered offsets must be readable again (bounded)."""
        if kind in TIER_FAULTS and self.tier_topic:
            deadline = time.monotonic() + 60
            while self._probe(params, timeout=5.0) == 0:
                if time.monotonic() > deadline:
                    raise AssertionError(f"tiered offsets of {self.tier_topic} unreadable 60s after {kind} healed")
                time.sleep(1.0)

    def _probe(self, params, timeout):
        from faults.workload import tier_probe
        c, p = self.c, params["partition"]
        try:
            d = c.cli("topic", "describe", self.tier_topic)["partition_details"][p]
            leader = c.all_brokers().get(d["leader"])
            # The leader's own view: its local log start (what it serves from disk).
            local = c.cli_at(leader, "topic", "describe", self.tier_topic, timeout=5)["partition_details"][p]
        except (RuntimeError, AttributeError, subprocess.TimeoutExpired):
            return 0
        start, below = max(local.get("remote_start_offset", -1), 0), local.get("local_start_offset", 0)
        # A seeded offset that only the tier holds (below the leader's local start), so
        # the read needs the object store unless the chunk cache has it already.
        span = below - start
        self.probes += 1
        offset = start + (params["member"] * 7919 + self.probes * 104729) % span if span > 0 else 0
        got = tier_probe(self.h, c.bootstrap(), self.tier_topic, p, offset, timeout=timeout)
        self.h.record("nemesis", "info", "tier-probe-range", partition=p, offset=offset, local_start=below,
                      remote_start=start, got=got)
        return got

    def heal(self, kind):
        extra = {}
        if kind == "pause-member":
            for m in self.members:
                m.resume()
        if kind == "disk-full" and self.filled is not None:
            b = self.c.brokers[self.filled]
            extra = {"broker_exited": not b.alive(),
                     "exit_code": b.proc.returncode if b.proc is not None else None}
            self.filled = None
        self.c.heal()
        if kind == "kill-copier" and self.copier is not None:
            self.copier.restart()
        if kind == "join-leave-broker" and self.joined is not None:
            new, self.joined = self.joined, None
            self.c.remove_broker(new)
            extra = {"removed": new}
        self.h.record("nemesis", "info", "nemesis", fault=kind, phase="healed", **extra)

    def wait_recovered(self, timeout):
        """Every broker ready and every partition led with its whole ISR. Not reaching
        that is a liveness failure of the broker after a healed fault, reported as such."""
        deadline = time.monotonic() + timeout
        self.c.wait_ready([*self.c.ids, *self.c.extra], timeout)
        last = None
        while time.monotonic() < deadline:
            try:
                if self.c.fully_replicated(self.topics):
                    self.h.record("nemesis", "info", "nemesis", phase="recovered")
                    return
            except RuntimeError as e:
                last = e
            time.sleep(0.5)
        raise AssertionError(f"cluster not fully replicated {timeout}s after healing "
                             f"{self.applied[-1] if self.applied else None}; last error: {last}")
