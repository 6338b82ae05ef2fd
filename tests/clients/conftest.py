"""Shared fixtures: a real strata-broker process on loopback with its own data dir."""
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STRATA_BROKER_BIN", ROOT / "target" / "debug" / "strata-broker"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerProcess:
    """Starts, stops, kills and restarts one broker, keeping its data dir and ports."""

    def __init__(self, data_dir, env=None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.metrics_port = free_port()
        self.admin_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            {
                "STRATA_KAFKA_LISTEN": f"127.0.0.1:{self.port}",
                "STRATA_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
                "STRATA_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
                "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            }
        )
        self.env.update(env or {})
        self.proc = None
        self.log_path = self.data_dir.parent / f"broker-{self.port}.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30):
        assert BIN.exists(), f"broker binary missing: {BIN} (run cargo build)"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "dev", "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
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
