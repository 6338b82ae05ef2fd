"""The nemesis: a fault schedule drawn from a seed, and the code that applies and
heals each fault, recording both in the history.

The seed fixes the schedule (which kinds, in which order, for how long, aimed at which
partition or broker slot); it cannot fix what the cluster does in between, so "the
leader of partition 1" is looked up when the fault starts. Faults run one at a time;
after each, the cluster is healed and must be fully replicated again before the next,
so every fault starts from a healthy cluster and a failure points at one fault."""
import random
import time

PROCESS_FAULTS = ("kill-partition-leader", "kill-controller", "pause-broker", "pause-member")
NET_FAULTS = ("cut-broker", "lossy-broker")


def offsets_partition(group, partitions):
    """The __consumer_offsets partition of an ASCII group id: Java's String.hashCode
    modulo the partition count, as the broker computes it."""
    h = 0
    for ch in group:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return 0 if h == -(1 << 31) else abs(h) % partitions


def kinds(has_net):
    return PROCESS_FAULTS + (NET_FAULTS if has_net else ())


def schedule(seed, seconds, has_net, partitions, brokers, each_once=False):
    """[(kind, params)] whose hold times add up to about `seconds`. With `each_once`
    every kind appears exactly once, in a seeded order, and `seconds` is ignored: the
    short profile covers every kind in the least time."""
    rng = random.Random(seed)
    available = list(kinds(has_net))
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
        else:
            hold = rng.uniform(2.0, 8.0)
        params = {"hold": round(hold, 2), "partition": rng.randrange(partitions),
                  "broker": rng.choice(brokers), "member": rng.randrange(1 << 16)}
        if kind == "lossy-broker":
            params["percent"] = rng.choice((10, 20, 30, 40))
        out.append((kind, params))
        total += hold + 3
    return out


class Nemesis:
    def __init__(self, cluster, history, topics, members=()):
        self.c, self.h, self.topics, self.members = cluster, history, topics, list(members)
        self.applied = []

    def run(self, plan, recover_timeout=90):
        for kind, params in plan:
            self.apply(kind, params)
            time.sleep(params["hold"])
            self.heal(kind)
            self.wait_recovered(recover_timeout)
            time.sleep(1.0)

    def apply(self, kind, params):
        c = self.c
        target = None
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
        self.h.record("nemesis", "info", "nemesis", fault=kind, phase="start", target=target, **params)
        self.applied.append((kind, target, params))

    def heal(self, kind):
        if kind == "pause-member":
            for m in self.members:
                m.resume()
        self.c.heal()
        self.h.record("nemesis", "info", "nemesis", fault=kind, phase="healed")

    def wait_recovered(self, timeout):
        """Every broker ready and every partition led with its whole ISR. Not reaching
        that is a liveness failure of the broker after a healed fault, reported as such."""
        deadline = time.monotonic() + timeout
        self.c.wait_ready(self.c.ids, timeout)
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
