"""A cluster of `strata-broker serve` processes the nemesis can break.

Each broker runs in its own network namespace, joined to the host by a veth pair on
a bridge the test creates (10.201.X.0/24, the host at .254, broker i at .i), so the
nemesis can cut links between brokers and drop packets with nft rules inside one
broker's namespace while the clients, on the host, still reach every broker. When
namespaces or nft are not usable the cluster falls back to loopback addresses
(127.0.0.N) and only process faults are available; `net.reason` says why.

Everything created here is removed by `close()` (namespaces, bridge, processes)."""
import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import BIN, free_port

CLI = Path(os.environ.get("STRATA_CLI_BIN", BIN.parent / "strata"))


def _run(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def netns_usable():
    """(True, "") when this process can create a namespace and load nft rules in it,
    else (False, what failed)."""
    if os.geteuid() != 0:
        return False, "not root"
    if not shutil.which("nft"):
        return False, "nft not installed"
    probe = f"sfprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        return False, f"ip netns add failed: {getattr(e, 'stderr', e)}"
    try:
        _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe")
    except subprocess.CalledProcessError as e:
        return False, f"nft in a namespace failed: {e.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return True, ""


class Net:
    """A bridge and one namespace per broker. Interface names are at most 15 bytes."""

    TABLE = "strata_fault"

    def __init__(self, ids):
        self.tag = f"{os.getpid() % 100000:x}"
        self.bridge = f"sfb{self.tag}"
        used = _run("ip", "-o", "-4", "addr", "show").stdout
        # A /24 nobody on this host uses, so two suites running at once do not clash;
        # started at a random place, so a client left over from an earlier run cannot
        # reach this cluster at the addresses it remembers.
        start = random.randrange(254)
        self.subnet = next(f"10.201.{x}" for x in ((start + k) % 254 + 1 for k in range(254))
                           if f" 10.201.{x}." not in used)
        self.ids = list(ids)
        self.faults = {}  # broker id -> nft rules currently loaded
        self.up = False

    def ns(self, i):
        return f"sf{self.tag}n{i}"

    def addr(self, i):
        return f"{self.subnet}.{i}"

    def prefix(self, i):
        return ["ip", "netns", "exec", self.ns(i)]

    def setup(self):
        self.up = True
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i in self.ids:
            veth = f"sf{self.tag}v{i}"
            _run("ip", "netns", "add", self.ns(i))
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns(i))
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run(*self.prefix(i), "ip", "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _run(*self.prefix(i), "ip", "link", "set", "eth0", "up")
            _run(*self.prefix(i), "ip", "link", "set", "lo", "up")

    def _load(self, i, rules):
        """Replace broker i's fault rules (input and output chains) with `rules`."""
        _run(*self.prefix(i), "nft", "flush", "ruleset")
        self.faults.pop(i, None)
        if not rules:
            return
        script = (
            f"table inet {self.TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; {rules['input']} }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept; {rules['output']} }}\n"
            "}\n"
        )
        subprocess.run([*self.prefix(i), "nft", "-f", "-"], input=script, text=True,
                       capture_output=True, check=True, timeout=30)
        self.faults[i] = rules

    def cut(self, i, others):
        """Broker i and `others` no longer reach each other (both directions are cut in
        i's namespace); clients on the host still reach all of them."""
        addrs = "{ " + ", ".join(self.addr(j) for j in others) + " }"
        self._load(i, {"input": f"ip saddr {addrs} drop;", "output": f"ip daddr {addrs} drop;"})

    def loss(self, i, percent):
        """Broker i drops `percent` % of the packets it sends and receives, to anyone."""
        rule = f"numgen random mod 100 < {int(percent)} drop;"
        self._load(i, {"input": rule, "output": rule})

    def heal(self):
        for i in list(self.faults):
            self._load(i, None)

    def close(self):
        if not self.up:
            return
        for i in self.ids:
            # Deleting a namespace frees its veth pair asynchronously; delete the host
            # end now so a next run never sees the name taken.
            _run("ip", "link", "del", f"sf{self.tag}v{i}", check=False)
            _run("ip", "netns", "del", self.ns(i), check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        self.up = False


class Broker:
    """One broker process; keeps its data dir and addresses across restarts."""

    def __init__(self, node_id, data_dir, host, prefix, ports, env):
        self.id = node_id
        self.data_dir = Path(data_dir)
        self.host = host
        self.prefix = prefix
        self.port, self.admin_port, self.metrics_port = ports
        self.env = dict(os.environ)
        self.env.update(env)
        self.env.update({
            "STRATA_NODE_ID": str(node_id),
            "STRATA_DATA_DIR": str(self.data_dir),
            "STRATA_KAFKA_LISTEN": f"{host}:{self.port}",
            "STRATA_ADMIN_LISTEN": f"{host}:{self.admin_port}",
            "STRATA_METRICS_LISTEN": f"{host}:{self.metrics_port}",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        })
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"broker-{node_id}.log"
        self.proc = None
        self.paused = False

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    @property
    def admin(self):
        return f"http://{self.host}:{self.admin_port}"

    def start(self):
        assert BIN.exists(), f"broker binary missing: {BIN} (run cargo build)"
        log = open(self.log_path, "ab")
        log.write(f"==== start at {time.monotonic():.3f}\n".encode())
        log.flush()
        # `ip netns exec` execs the broker in place, so proc.pid is the broker's pid.
        self.proc = subprocess.Popen([*self.prefix, str(BIN), "serve"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        self.paused = False

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        self.paused = False

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False


class FaultCluster:
    def __init__(self, tmp_path, size=3, use_netns=True, env=None):
        self.ids = list(range(1, size + 1))
        ok, self.netns_reason = netns_usable() if use_netns else (False, "disabled")
        self.net = Net(self.ids) if ok else None
        if self.net:
            self.net.setup()
        self.brokers = {}
        for i in self.ids:
            if self.net:
                host, prefix, ports = self.net.addr(i), self.net.prefix(i), (9092, 9093, 9644)
            else:
                host = f"127.0.0.{i}"
                prefix, ports = [], (free_port(host), free_port(host), free_port(host))
            self.brokers[i] = Broker(i, tmp_path / f"node-{i}", host, prefix, ports, {
                "STRATA_OFFSETS_TOPIC_PARTITIONS": "4",
                "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
                "STRATA_BROKER_SESSION_TIMEOUT_MS": "3000",
                "STRATA_REPLICA_LAG_TIME_MAX_MS": "5000",
                # Small segments: rolls (and producer-state snapshots) happen under faults.
                "STRATA_LOG_SEGMENT_BYTES": str(256 << 10),
                **(env or {}),
            })
        quorum = ",".join(f"{i}@{b.host}:{b.admin_port}" for i, b in self.brokers.items())
        for b in self.brokers.values():
            b.env["STRATA_CONTROLLER_VOTERS"] = quorum

    @property
    def has_net(self):
        return self.net is not None

    def start(self, timeout=90):
        for b in self.brokers.values():
            b.start()
        self.wait_ready(self.ids, timeout)

    def wait_ready(self, ids, timeout):
        deadline = time.monotonic() + timeout
        for i in ids:
            b = self.brokers[i]
            while not b.ready():
                if not b.alive():
                    raise RuntimeError(f"broker {i} exited with {b.proc.returncode if b.proc else None}; "
                                       f"log: {b.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"broker {i} not ready within {timeout}s; log: {b.log_path}")
                time.sleep(0.1)

    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers.values())

    def cli(self, *args, timeout=20):
        """Asks the first broker that answers (a killed or paused one does not)."""
        last = None
        for b in self.brokers.values():
            if not b.alive() or b.paused:
                continue
            try:
                out = subprocess.run([str(CLI), "--admin", b.admin, "-o", "json", *args],
                                     capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                last = e
                continue
            if out.returncode == 0:
                return json.loads(out.stdout) if out.stdout.strip() else None
            last = out.stderr.strip()
        raise RuntimeError(f"strata {' '.join(args)} failed everywhere: {last}")

    def leader(self, topic, p):
        return self.cli("topic", "describe", topic)["partition_details"][p]["leader"]

    def controller(self):
        return self.cli("cluster", "describe")["controller_id"]

    def fully_replicated(self, topics):
        for topic in topics:
            for part in self.cli("topic", "describe", topic)["partition_details"]:
                if part["leader"] < 0 or sorted(part["isr"]) != sorted(part["replicas"]):
                    return False
        return True

    def heal(self):
        """Every fault off: links restored, paused brokers resumed, dead ones started."""
        if self.net:
            self.net.heal()
        for b in self.brokers.values():
            if b.paused:
                b.resume()
        for b in self.brokers.values():
            if not b.alive():
                b.start()

    def close(self):
        for b in self.brokers.values():
            if b.paused:
                b.resume()
            b.kill()
        if self.net:
            self.net.close()
