"""Shared fixtures: a real strata-broker process on loopback with its own data dir."""
import os
import signal
import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STRATA_BROKER_BIN", ROOT / "target" / "debug" / "strata-broker"))


_handed_out = set()


def watermarks(consumer, tp, timeout=20):
    """(low, high) of a partition. A leadership change between the client's metadata
    and its ListOffsets request (an election, the controller giving leadership back
    to the preferred replica) answers NOT_LEADER or a similar leadership error, and a
    new leader whose high watermark has not reached its epoch's start yet answers
    OFFSET_NOT_AVAILABLE (KIP-207); like
    the Java consumer, ask again until `timeout`. Any other error raises at once.
    (librdkafka's retriable flag is not set on this call's errors, hence the list.)"""
    leadership = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                  KafkaError.OFFSET_NOT_AVAILABLE, KafkaError._TRANSPORT}
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(left, 1.0))
        except KafkaException as e:
            if e.args[0].code() not in leadership or time.monotonic() + 0.2 >= deadline:
                raise
            time.sleep(0.2)


def free_port(host="127.0.0.1"):
    """A port nothing listens on, below Linux's ephemeral range (32768-60999), so an
    outgoing connection cannot take it before the broker binds it; never the same
    one twice in this process."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BrokerProcess:
    """Starts, stops, kills and restarts one broker, keeping its data dir and ports."""

    def __init__(self, data_dir, env=None, host="127.0.0.1", mode="dev"):
        self.data_dir = Path(data_dir)
        self.host = host
        self.mode = mode
        self.port = free_port(host)
        self.metrics_port = free_port(host)
        self.admin_port = free_port(host)
        self.env = dict(os.environ)
        self.env.update(
            {
                "STRATA_KAFKA_LISTEN": f"{host}:{self.port}",
                "STRATA_METRICS_LISTEN": f"{host}:{self.metrics_port}",
                "STRATA_ADMIN_LISTEN": f"{host}:{self.admin_port}",
                "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            }
        )
        self.env.update(env or {})
        self.proc = None
        self.log_path = self.data_dir.parent / f"broker-{host}-{self.port}.log"

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    @property
    def admin(self):
        return f"http://{self.host}:{self.admin_port}"

    def start(self, timeout=30, wait_ready=True):
        assert BIN.exists(), f"broker binary missing: {BIN} (run cargo build)"
        log = open(self.log_path, "ab")
        if self.mode == "dev":
            args = [str(BIN), "dev", "--data-dir", str(self.data_dir)]
        else:
            self.env["STRATA_DATA_DIR"] = str(self.data_dir)
            args = [str(BIN), "serve"]
        self.proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not wait_ready:
            return self
        return self.wait_ready(timeout)

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}; log: {self.log_path}")
            if self.ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"broker not ready within {timeout}s; log: {self.log_path}")

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def broker_factory(tmp_path):
    started = []

    def make(env=None):
        b = BrokerProcess(tmp_path / f"data-{len(started)}", env)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()
