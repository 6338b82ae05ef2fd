"""Scale-out and drain of a tiered Strata cluster on the local control plane, driven
by bench/scale_out.sh (which starts `strata-e2e up`, installs the chart and applies
the Cluster): fills a tiered topic with history, then scales the Cluster 3 -> 4 and
back 4 -> 3 under a fixed-rate acks=all producer, and prints a Markdown block for
bench/RESULTS.md with, for each move: the bytes the brokers copied to each other for
the moved replicas (the follower side of the throttled reassignment traffic) as a
share of the topic's bytes, every byte followers fetched (the producer's own
replication included), the time to balanced, the peak copy rate per broker against
the throttle, and the producer's latency percentiles before and during the move.

Usage: python bench/scale_out.py <history MiB> <throttle bytes/s> <strata CLI>"""
import json
import subprocess
import sys
import threading
import time
import urllib.request

from confluent_kafka import Producer

HISTORY_MIB, THROTTLE, CLI = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PARTITIONS = 12
TOPIC = "history"
VALUE = 16 * 1024
LOAD_RATE = 1000  # records/s of 1 KiB during the moves
started = time.monotonic()


def log(what):
    print(f"[{time.monotonic() - started:7.1f}s] {what}", file=sys.stderr, flush=True)


def kubectl(*args, stdin=None):
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def broker_pods():
    """Running broker pods of `demo` not being deleted: ordinal -> pod IP."""
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/instance=demo", "-o", "json"))
    out = {}
    for p in pods["items"]:
        ip = p.get("status", {}).get("podIP")
        if ip and not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running":
            out[int(p["metadata"]["name"].rsplit("-", 1)[1])] = ip
    return out


def cli(ip, *args):
    out = subprocess.run([CLI, "--admin", f"{ip}:9093", "-o", "json", *args],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"strata {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def counter(ip, name, side=None):
    try:
        with urllib.request.urlopen(f"http://{ip}:9644/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name) and (side is None or f'side="{side}"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def copied(pods):
    """Per broker: (bytes fetched as a follower, bytes of throttled replicas fetched)."""
    return {i: (counter(ip, "strata_replication_fetched_bytes_total"),
                counter(ip, "strata_replication_throttled_bytes_total", "follower"))
            for i, ip in pods.items()}


def describe(pods):
    ip = next(iter(pods.values()))
    return cli(ip, "topic", "describe", TOPIC)["partition_details"]


def spread(parts):
    load = {}
    for p in parts:
        for r in p["replicas"]:
            load[r] = load.get(r, 0) + 1
    return load


def cluster_status():
    return json.loads(kubectl("get", "strata", "demo", "-o", "json")).get("status", {})


class Load(threading.Thread):
    """acks=all producer at LOAD_RATE records/s; keeps every delivery latency."""

    def __init__(self, bootstrap):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                           "enable.idempotence": True})
        self.latencies, self.errors, self.stop_at = [], 0, None
        self.mark = 0

    def run(self):
        start, i = time.monotonic(), 0
        while self.stop_at is None:
            due = (time.monotonic() - start) * LOAD_RATE
            while i < due:
                sent = time.monotonic()
                self.p.produce("load", value=b"v" * 1024,
                               on_delivery=lambda err, msg, sent=sent: self.done(err, sent))
                i += 1
            self.p.poll(0.001)
        self.p.flush(60)

    def done(self, err, sent):
        if err is None:
            self.latencies.append(time.monotonic() - sent)
        else:
            self.errors += 1

    def window(self):
        """Latencies since the last call."""
        got, self.mark = self.latencies[self.mark:], len(self.latencies)
        return got


def percentiles(xs):
    if not xs:
        return "no deliveries"
    xs = sorted(xs)
    at = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000  # noqa: E731
    return f"p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, p99.9 {at(0.999):.1f} ms ({len(xs)} records)"


def apply_topic(name, partitions, configs):
    cfg = "".join(f"    {k}: \"{v}\"\n" for k, v in configs.items())
    kubectl("apply", "-f", "-", stdin=(
        f"apiVersion: strata.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: {name}\nspec:\n"
        f"  clusterRef: demo\n  partitions: {partitions}\n  replicationFactor: 3\n"
        + (f"  config:\n{cfg}" if cfg else "")))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        t = json.loads(kubectl("get", "topics", name, "-o", "json"))
        if any(c["type"] == "Ready" and c["status"] == "True" for c in t.get("status", {}).get("conditions", [])):
            return
        time.sleep(1)
    raise RuntimeError(f"topic {name} not Ready")


def fill(pods):
    bootstrap = ",".join(f"{ip}:9092" for ip in pods.values())
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.size": 1 << 20, "queue.buffering.max.kbytes": 262144})
    total, value, sent = HISTORY_MIB << 20, b"h" * VALUE, 0
    next_report = 256 << 20
    while sent < total:
        try:
            p.produce(TOPIC, value=value)
            sent += VALUE
        except BufferError:
            p.poll(0.05)
        if sent >= next_report:
            log(f"history: {sent >> 20} of {HISTORY_MIB} MiB produced")
            next_report += 256 << 20
        p.poll(0)
    assert p.flush(300) == 0, "history not acknowledged"
    return total


def wait_tiered(pods):
    """Until every partition's history, but its local tail, is in the tier."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        parts = describe(pods)
        local = sum(p["high_watermark"] - p["local_start_offset"] for p in parts)
        total = sum(p["high_watermark"] for p in parts)
        if total and local / total < 0.05:
            log(f"tiered: {local} of {total} records still only local")
            return
        log(f"waiting for the tier: {local} of {total} records only local")
        time.sleep(10)
    raise RuntimeError("history not tiered in 15 minutes")


def move(what, replicas, topic_bytes, load):
    """Scales the Cluster to `replicas` brokers and follows it until balanced."""
    before_pods = broker_pods()
    before = copied(before_pods)
    load.window()
    time.sleep(20)
    baseline = load.window()
    kubectl("patch", "strata", "demo", "--type", "merge", "-p", json.dumps({"spec": {"replicas": replicas}}))
    t0 = time.monotonic()
    peak, samples, last = {}, {}, {}
    deadline = t0 + 1800
    while time.monotonic() < deadline:
        time.sleep(2)
        pods = broker_pods()
        now = time.monotonic()
        for i, ip in pods.items():
            v = counter(ip, "strata_replication_throttled_bytes_total", "follower")
            samples.setdefault(i, []).append((now, v))
            # Peak over a 10 s window, so one fetch's burst does not count as a rate.
            old = [s for s in samples[i] if now - s[0] >= 10]
            if old:
                t, b = old[-1]
                peak[i] = max(peak.get(i, 0), (v - b) / (now - t))
        st = cluster_status()
        rb = st.get("rebalance") or {}
        try:
            load_now = spread(describe(pods))
        except RuntimeError:
            continue
        even = len(load_now) == replicas and max(load_now.values()) - min(load_now.values()) <= 1
        settled = (st.get("phase") == "Running" and st.get("readyReplicas") == replicas
                   and len(pods) == replicas and rb.get("phase") in (None, "Done") and even)
        if settled != last.get("settled") or int(now) % 20 < 2:
            log(f"{what}: phase {st.get('phase')}, rebalance {rb.get('phase')} "
                f"{rb.get('completedMoves')}/{rb.get('totalMoves')}, replicas per broker {load_now}")
        last["settled"] = settled
        if settled:
            break
    else:
        raise RuntimeError(f"{what}: not balanced in 30 minutes")
    took = time.monotonic() - t0
    during = load.window()
    after = copied(broker_pods())
    # Brokers gone after a drain keep their counts at what they were last scraped.
    fetched = sum(after.get(i, before.get(i, (0, 0)))[0] - before.get(i, (0, 0))[0] for i in set(before) | set(after))
    throttled = sum(after.get(i, before.get(i, (0, 0)))[1] - before.get(i, (0, 0))[1]
                    for i in set(before) | set(after))
    # A drained broker's counter is scraped before it goes; sample values cover it.
    for i, s in samples.items():
        if i not in after and s:
            throttled += s[-1][1] - before.get(i, (0, 0))[1]
    return {
        "what": what, "took": took, "throttled": throttled, "fetched": fetched,
        "share": throttled / topic_bytes, "peak": peak, "baseline": percentiles(baseline),
        "during": percentiles(during), "spread": spread(describe(broker_pods())),
    }


def main():
    pods = broker_pods()
    assert len(pods) == 3, pods
    apply_topic(TOPIC, PARTITIONS, {"remote.storage.enable": "true", "segment.bytes": str(4 << 20),
                                    "local.retention.bytes": str(4 << 20), "retention.ms": "-1"})
    apply_topic("load", 3, {"min.insync.replicas": "2"})
    log(f"filling {TOPIC}: {HISTORY_MIB} MiB in {PARTITIONS} partitions, RF 3")
    t = time.monotonic()
    topic_bytes = fill(pods)
    log(f"history produced in {time.monotonic() - t:.0f}s")
    wait_tiered(pods)
    parts = describe(pods)
    remote = sum(p["remote_size_bytes"] for p in parts)
    local = sum(p["size_bytes"] for p in parts)
    load = Load(",".join(f"{ip}:9092" for ip in pods.values()))
    load.start()
    out = [move("scale-out 3 -> 4", 4, topic_bytes, load)]
    out.append(move("drain 4 -> 3", 3, topic_bytes, load))
    load.stop_at = time.monotonic()
    load.join(90)
    print(f"topic `{TOPIC}`: {PARTITIONS} partitions, RF 3, {topic_bytes >> 20} MiB of history "
          f"(16 KiB records), segment.bytes 4 MiB, local.retention.bytes 4 MiB; before the moves the "
          f"leaders' describe showed {remote >> 20} MiB in the tier and {local >> 20} MiB local "
          f"(size_bytes, all partitions); throttle {THROTTLE} B/s "
          f"(`reassignmentThrottle`); load: acks=all, 1 KiB, {LOAD_RATE} records/s, "
          f"{load.errors} delivery errors\n")
    print("| move | copied for moved replicas | share of the topic's bytes | all follower fetches | "
          "time to balanced | peak copy rate per broker (10 s) | produce latency before | during | "
          "replicas per broker after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in out:
        peak = ", ".join(f"{i}: {v / (1 << 20):.1f} MiB/s" for i, v in sorted(r["peak"].items()) if v > 0)
        print(f"| {r['what']} | {r['throttled'] / (1 << 20):.1f} MiB | {100 * r['share']:.2f}% | "
              f"{r['fetched'] / (1 << 20):.1f} MiB | {r['took']:.0f} s | {peak or '-'} | "
              f"{r['baseline']} | {r['during']} | {r['spread']} |")


if __name__ == "__main__":
    main()
