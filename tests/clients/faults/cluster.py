"""A cluster of `strata-broker serve` processes the nemesis can break.

Each broker runs in its own network namespace, joined to the host by a veth pair on
a bridge the test creates (10.201.X.0/24, the host at .254, broker i at .i), so the
nemesis can cut links between brokers and drop packets with nft rules inside one
broker's namespace while the clients, on the host, still reach every broker. When
namespaces or nft are not usable the cluster falls back to loopback addresses
(127.0.0.N) and only process faults are available; `net.reason` says why.

Optionally each broker's data dir is on its own small tmpfs (`Disk`, the disk-full
fault), the tier is a SeaweedFS server behind a delaying proxy (`faults/s3.py`, the
object-store faults), and brokers join and leave (`add_broker`, `remove_broker`).

Everything created here is removed by `close()` (namespaces, bridge, processes,
mounts, the S3 server), also when the cluster failed half-way through being built."""
import errno
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
# Partitions of __transaction_state the brokers create (the nemesis computes which
# one coordinates a transactional.id from it).
TXN_STATE_PARTITIONS = 4


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

    @property
    def host_addr(self):
        """The host's address on the bridge: what the namespaces reach the host at."""
        return f"{self.subnet}.254"

    def setup(self):
        self.up = True
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i in list(self.ids):
            self._add_ns(i)

    def _add_ns(self, i):
        veth = f"sf{self.tag}v{i}"
        _run("ip", "netns", "add", self.ns(i))
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns(i))
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        _run(*self.prefix(i), "ip", "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
        _run(*self.prefix(i), "ip", "link", "set", "eth0", "up")
        _run(*self.prefix(i), "ip", "link", "set", "lo", "up")

    def add(self, i):
        """A namespace for a broker joining later."""
        self.ids.append(i)
        self._add_ns(i)

    def remove(self, i):
        self.faults.pop(i, None)
        _run("ip", "link", "del", f"sf{self.tag}v{i}", check=False)
        _run("ip", "netns", "del", self.ns(i), check=False)
        self.ids.remove(i)

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


class Disk:
    """A small tmpfs holding one broker's data dir, so the nemesis can fill it: the
    broker's data is `<mount>/data`, the filler `<mount>/filler`. Unmounted by
    `close()` (lazily if a process still has a file open there)."""

    def __init__(self, mount, size_mb):
        self.mount = Path(mount)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.size_mb = size_mb
        _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(self.mount))
        self.mounted = True
        self.filler = self.mount / "filler"

    @property
    def data_dir(self):
        return self.mount / "data"

    def free_bytes(self):
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def fill(self):
        """Writes the filler until the file system refuses (ENOSPC); bounded by the
        size of the file system. Returns the bytes written."""
        chunk = b"\0" * (1 << 20)
        written = 0
        limit = (self.size_mb + 1) << 20
        with open(self.filler, "ab", buffering=0) as f:
            while written < limit:
                try:
                    n = f.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += n or 0
                if not n:
                    break
            # Less than a chunk may be left: take it byte-pages at a time.
            small = b"\0" * 4096
            while written < limit:
                try:
                    n = f.write(small)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += n or 0
                if not n:
                    break
        return written

    def empty(self):
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass

    def close(self):
        if not self.mounted:
            return
        self.empty()
        if _run("umount", str(self.mount), check=False).returncode != 0:
            _run("umount", "-l", str(self.mount), check=False)
        self.mounted = False


def tmpfs_usable(probe_dir):
    """(True, "") when this process can mount a tmpfs, else (False, why)."""
    if os.geteuid() != 0:
        return False, "not root"
    probe = Path(probe_dir) / "tmpfs-probe"
    probe.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe), check=False)
    if r.returncode != 0:
        return False, f"mount -t tmpfs failed: {r.stderr.strip()}"
    _run("umount", str(probe), check=False)
    return True, ""


class Broker:
    """One broker process; keeps its data dir and addresses across restarts."""

    def __init__(self, node_id, data_dir, host, prefix, ports, env, log_dir=None):
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
        log_dir = Path(log_dir) if log_dir else self.data_dir.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"broker-{node_id}.log"
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
    """`size` voter brokers; optionally each on its own tmpfs of `disk_mb` MiB (the
    disk-full fault), with the tier on a SeaweedFS server behind a delaying proxy
    (`tier=True`: the object-store faults), and with brokers joining and leaving
    (`add_broker` / `remove_broker`). `disk_reason` / `tier_reason` say why a part
    is unavailable."""

    def __init__(self, tmp_path, size=3, use_netns=True, env=None, disk_mb=None, tier=False):
        self.tmp = Path(tmp_path)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(1, size + 1))
        self.extra = {}  # brokers that joined later: id -> Broker
        self.disks = {}
        self.s3 = None
        self.net = None
        self.brokers = {}
        self.env = dict(env or {})
        self.disk_reason = self.tier_reason = "disabled"
        try:
            self._build(use_netns, disk_mb, tier)
        except BaseException:
            self.close()
            raise

    def _build(self, use_netns, disk_mb, tier):
        ok, self.netns_reason = netns_usable() if use_netns else (False, "disabled")
        if ok:
            self.net = Net(self.ids)
            self.net.setup()
        if disk_mb:
            usable, self.disk_reason = tmpfs_usable(self.tmp)
            self.disk_mb = disk_mb if usable else None
        else:
            self.disk_mb = None
        if tier:
            from faults.s3 import SeaweedS3, weed_available
            if weed_available():
                self.s3 = SeaweedS3(self.tmp / "s3", "strata-faults",
                                    proxy_host=self.net.host_addr if self.net else "127.0.0.1")
                self.env.update(self.s3.broker_env(f"faults-{os.getpid()}"))
                self.tier_reason = ""
            else:
                self.tier_reason = "weed (SeaweedFS) not found"
        for i in self.ids:
            self.brokers[i] = self._make(i)
        for b in self.brokers.values():
            b.env["STRATA_CONTROLLER_VOTERS"] = self.voters()

    def voters(self):
        return ",".join(f"{i}@{self.brokers[i].host}:{self.brokers[i].admin_port}" for i in self.ids)

    def _make(self, i):
        if self.net:
            host, prefix, ports = self.net.addr(i), self.net.prefix(i), (9092, 9093, 9644)
        else:
            host = f"127.0.0.{i}"
            prefix, ports = [], (free_port(host), free_port(host), free_port(host))
        if self.disk_mb:
            self.disks[i] = Disk(self.tmp / f"disk-{i}", self.disk_mb)
            data_dir = self.disks[i].data_dir
        else:
            data_dir = self.tmp / f"node-{i}"
        return Broker(i, data_dir, host, prefix, ports, {
            "STRATA_OFFSETS_TOPIC_PARTITIONS": "4",
            # The transactional workload's coordinators: few partitions, like the
            # offsets topic's, so recovery checks stay quick.
            "STRATA_TRANSACTION_STATE_PARTITIONS": str(TXN_STATE_PARTITIONS),
            "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "STRATA_BROKER_SESSION_TIMEOUT_MS": "3000",
            "STRATA_REPLICA_LAG_TIME_MAX_MS": "5000",
            # Small segments: rolls (and producer-state snapshots) happen under faults.
            "STRATA_LOG_SEGMENT_BYTES": str(256 << 10),
            # Closed segments of tiered topics are looked for every second, and local
            # retention runs every second, so uploaded segments leave the local disk
            # during the run.
            "STRATA_TIER_UPLOAD_INTERVAL_MS": "1000",
            "STRATA_RETENTION_CHECK_INTERVAL_MS": "1000",
            **self.env,
        }, log_dir=self.tmp)

    @property
    def has_net(self):
        return self.net is not None

    @property
    def has_disk(self):
        return bool(self.disk_mb)

    @property
    def has_tier(self):
        return self.s3 is not None

    def all_brokers(self):
        return {**self.brokers, **self.extra}

    def start(self, timeout=90):
        for b in self.brokers.values():
            b.start()
        self.wait_ready(self.ids, timeout)

    def wait_ready(self, ids, timeout):
        deadline = time.monotonic() + timeout
        brokers = self.all_brokers()
        for i in ids:
            b = brokers[i]
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
        for b in self.all_brokers().values():
            if not b.alive() or b.paused:
                continue
            try:
                out = self.cli_at(b, *args, timeout=timeout)
            except (subprocess.TimeoutExpired, RuntimeError) as e:
                last = e
                continue
            return out
        raise RuntimeError(f"strata {' '.join(args)} failed everywhere: {last}")

    def cli_at(self, b, *args, timeout=20):
        """Asks broker `b` (its own view: local log offsets are its replica's)."""
        out = subprocess.run([str(CLI), "--admin", b.admin, "-o", "json", *args],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return json.loads(out.stdout) if out.stdout.strip() else None

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

    # -- disk-full --------------------------------------------------------------

    def fill_disk(self, i):
        return self.disks[i].fill()

    # -- brokers joining and leaving ----------------------------------------------

    def add_broker(self, timeout=60):
        """Starts a new broker (the next unused id, a learner of the metadata quorum,
        fresh data dir) and waits until it is ready. Returns its id."""
        i = max([*self.ids, *self.extra, *getattr(self, "_retired", [])]) + 1
        if self.net:
            self.net.add(i)
        b = self._make(i)
        b.env["STRATA_CONTROLLER_VOTERS"] = self.voters()
        self.extra[i] = b
        b.start()
        self.wait_ready([i], timeout)
        return i

    def holds_nothing(self, i):
        """No replica (or leadership) of any partition is on broker `i`."""
        for b in self.cli("cluster", "describe")["brokers"]:
            if b["id"] == i:
                return not b.get("replicas") and not b.get("leaders")
        return True

    def remove_broker(self, i, timeout=90):
        """Drains broker `i` (the controller moves its replicas and leaderships away),
        waits until it holds nothing, stops it (SIGTERM), waits until it is fenced and
        unregisters it. Bounded by `timeout`; raises when it cannot finish."""
        b = self.extra[i]
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                self.cli("broker", "drain", str(i))
                break
            except RuntimeError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"broker {i} could not be drained: {last}")
            time.sleep(0.5)
        while not self._safe(lambda: self.holds_nothing(i)):
            if time.monotonic() > deadline:
                raise AssertionError(f"drained broker {i} still holds replicas after {timeout}s")
            time.sleep(0.5)
        if b.alive():
            b.proc.send_signal(signal.SIGTERM)
            try:
                b.proc.wait(30)
            except subprocess.TimeoutExpired:
                b.kill()
        b.proc = None
        while True:
            try:
                self.cli("broker", "unregister", str(i))
                break
            except RuntimeError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"stopped broker {i} could not be unregistered: {last}")
            time.sleep(0.5)
        self._retire(i)

    def _retire(self, i):
        b = self.extra.pop(i)
        b.kill()
        self._retired = [*getattr(self, "_retired", []), i]
        if self.net and i in self.net.ids:
            self.net.remove(i)
        d = self.disks.pop(i, None)
        if d:
            d.close()

    def _safe(self, pred):
        try:
            return pred()
        except RuntimeError:
            return False

    def heal(self):
        """Every fault off: links restored, disks emptied, the object store resumed
        and fast, paused brokers resumed, dead ones started."""
        if self.net:
            self.net.heal()
        for d in self.disks.values():
            d.empty()
        if self.s3:
            self.s3.heal()
        for b in self.all_brokers().values():
            if b.paused:
                b.resume()
        for b in self.all_brokers().values():
            if not b.alive():
                b.start()

    def close(self):
        for b in self.all_brokers().values():
            if b.paused:
                b.resume()
            b.kill()
        if self.s3:
            self.s3.close()
        for d in self.disks.values():
            d.close()
        if self.net:
            self.net.close()
