"""The tier's object store for a fault run: a real SeaweedFS S3 server (`weed server`,
master + volume + filer + S3 gateway in one process) on 127.0.0.1, reached by the
brokers only through a delaying TCP proxy written here, so the nemesis can stop the
store (SIGSTOP of the weed processes: connections hang, nothing is refused), take it
down (the proxy drops and refuses every connection: requests fail at once) or slow
every response down (the proxy holds each chunk it forwards for `delay` seconds).

Where brokers run in network namespaces the proxy listens on the bridge address of
the host (which every namespace reaches); otherwise on 127.0.0.1."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port

WEED = Path(os.environ.get("STRATA_WEED_BIN", Path.home() / ".cache/strata/seaweedfs-4.48/bin/weed"))
ACCESS_KEY, SECRET_KEY, REGION = "strata", "strata-fault-secret", "us-east-1"


def weed_available():
    return WEED.exists() or shutil.which("weed") is not None


class DelayProxy:
    """A TCP proxy adding `delay` seconds before every chunk it forwards, in both
    directions. One thread per connection and direction; bounded by the connections
    the brokers open. `delay` can be changed at any time (0: a plain relay). With
    `refuse(True)` it drops every connection it has and closes each new one at once:
    the store is down, and requests fail fast instead of hanging."""

    def __init__(self, listen_host, upstream):
        self.upstream = upstream
        self.delay = 0.0
        self.refusing = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_host, free_port(listen_host)))
        self.sock.listen(128)
        self.addr = self.sock.getsockname()
        self.stop_flag = threading.Event()
        self.conns = set()
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "chunks": 0, "delayed_chunks": 0}
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop_flag.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns.update((client, server))
                self.stats["connections"] += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while not self.stop_flag.is_set():
                r, _, _ = select.select([src], [], [], 0.5)
                if not r:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                delay = self.delay
                if delay > 0:
                    time.sleep(delay)
                    self.stats["delayed_chunks"] += 1
                self.stats["chunks"] += 1
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self.lock:
                self.conns.discard(src)
                self.conns.discard(dst)

    def refuse(self, on):
        self.refusing = on
        if on:
            with self.lock:
                conns = list(self.conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop_flag.set()
        self.thread.join(5)
        self.sock.close()
        with self.lock:
            for s in list(self.conns):
                try:
                    s.close()
                except OSError:
                    pass


class SeaweedS3:
    """SeaweedFS with one bucket, started under `dir`; `endpoint` is the proxy's."""

    def __init__(self, dir, bucket, proxy_host="127.0.0.1"):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.paused = False
        weed = WEED if WEED.exists() else Path(shutil.which("weed"))
        config = {"identities": [{"name": "strata",
                                  "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        (self.dir / "s3.json").write_text(json.dumps(config))
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc",
                 "iceberg", "lance"]
        self.ports = {n: free_port() for n in names}
        p = self.ports
        args = [str(weed), "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", "-volume.max=0",
                "-volume.preStopSeconds=0", "-filer", f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer_grpc']}", f"-filer.localSocket={self.dir / 'filer.sock'}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
                f"-s3.port.iceberg={p['iceberg']}", f"-s3.port.lance={p['lance']}",
                f"-s3.localSocket={self.dir / 's3.sock'}", f"-s3.config={self.dir / 's3.json'}"]
        (self.dir / "data").mkdir(exist_ok=True)
        self.log = open(self.dir / "seaweedfs.log", "ab")
        self.weed = weed
        # Its own process group, so the outage stops every process weed runs.
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.proxy = None
        try:
            self._wait_ready(90)
            self._create_bucket(90)
            self.proxy = DelayProxy(proxy_host, ("127.0.0.1", p["s3"]))
        except BaseException:
            self.close()
            raise
        self.endpoint = f"http://{self.proxy.addr[0]}:{self.proxy.addr[1]}"

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {self.proc.returncode}; log {self.dir / 'seaweedfs.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.ports['s3']}/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers (403 without credentials)
            except OSError:
                time.sleep(0.25)
        raise RuntimeError("SeaweedFS S3 not ready")

    def _create_bucket(self, timeout):
        deadline = time.monotonic() + timeout
        master = f"127.0.0.1:{self.ports['master']}.{self.ports['master_grpc']}"
        while time.monotonic() < deadline:
            try:
                out = subprocess.run([str(self.weed), "shell", f"-master={master}"], capture_output=True,
                                     text=True, timeout=20,
                                     input=f"s3.bucket.create -name {self.bucket}\ns3.bucket.list\nexit\n")
                if any(line.strip().startswith(self.bucket) for line in out.stdout.splitlines()):
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"bucket {self.bucket} not created")

    def broker_env(self, prefix):
        return {
            "STRATA_TIER_BUCKET": self.bucket,
            "STRATA_TIER_ENDPOINT": self.endpoint,
            "STRATA_TIER_REGION": REGION,
            "STRATA_TIER_PREFIX": prefix,
            "STRATA_TIER_ACCESS_KEY_ID": ACCESS_KEY,
            "STRATA_TIER_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def pause(self):
        """The outage: every weed process stopped; open connections hang."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def slow(self, delay):
        self.proxy.delay = delay

    def refuse(self):
        """The outage as a store that is down: connections fail at once."""
        self.proxy.refuse(True)

    def heal(self):
        if self.paused:
            self.resume()
        if self.proxy:
            self.proxy.delay = 0.0
            self.proxy.refuse(False)

    def close(self):
        if self.proxy:
            self.proxy.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.log.close()
