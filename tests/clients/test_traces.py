"""OpenTelemetry traces, checked in a real Jaeger (v2, built from the Go module proxy,
receiving OTLP/HTTP and answering its query API): with OTEL_EXPORTER_OTLP_ENDPOINT
set, a produce request with acks=all on three brokers is one trace whose root is the
request and whose children are the append and the wait for the followers; each
broker names itself on the trace's resource. Without the variable nothing is
exported (the other tests run so)."""
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import free_port
from test_cluster import Cluster, wait_until

CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata"))


def jaeger_binary():
    path = CACHE / "current-jaeger"
    assert path.exists(), "no Jaeger: run scripts/setup.sh (it builds tests/jaeger)"
    return Path(path.read_text().strip())


CONFIG = Path(__file__).resolve().parent.parent / "jaeger" / "config.yaml"


class Jaeger:
    def __init__(self, tmp):
        self.otlp, self.query, query_grpc = free_port(), free_port(), free_port()
        config = tmp / "jaeger.yaml"
        config.write_text(CONFIG.read_text().format(otlp=self.otlp, query=self.query, query_grpc=query_grpc))
        self.log = open(tmp / "jaeger.log", "wb")
        self.proc = subprocess.Popen([str(jaeger_binary()), "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("jaeger answering", lambda: self.get("/api/services") is not None, timeout=60)

    def get(self, path, **params):
        url = f"http://127.0.0.1:{self.query}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def traces(self, service, operation):
        got = self.get("/api/traces", service=service, operation=operation, limit=50, lookback="1h")
        return (got or {}).get("data") or []

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def jaeger(tmp_path):
    j = Jaeger(tmp_path)
    yield j
    j.stop()


def spans_by_name(trace):
    return {s["operationName"]: s for s in trace["spans"]}


def parent_of(span):
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def test_an_acks_all_produce_is_one_trace_from_request_to_replication(tmp_path, jaeger):
    c = Cluster(tmp_path, 3)
    for n in c.nodes.values():
        n.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{jaeger.otlp}"
        n.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    try:
        c.start()
        c.cli("topic", "create", "traced", "--partitions", "1", "--replication-factor", "3")
        wait_until("all replicas in sync", lambda: len(c.partition("traced")["isr"]) == 3)
        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "client.id": "traced-producer",
                      "linger.ms": 0})
        for i in range(5):
            p.produce("traced", b"v%d" % i)
            assert p.flush(30) == 0

        def produce_traces():
            found = []
            for t in jaeger.traces("strata-broker", "kafka.Produce"):
                spans = spans_by_name(t)
                if {"produce.append", "produce.await_replication"} <= spans.keys():
                    found.append(t)
            return found if len(found) >= 5 else None
        traces = wait_until("five produce traces in Jaeger", produce_traces, timeout=60)
        for t in traces:
            spans = spans_by_name(t)
            root = spans["kafka.Produce"]
            assert parent_of(root) is None, root
            assert parent_of(spans["produce.append"]) == root["spanID"]
            wait = spans["produce.await_replication"]
            assert parent_of(wait) == root["spanID"]
            # The request lasts at least as long as the wait for the followers in it.
            assert 0 < wait["duration"] <= root["duration"], (wait, root)
            tags = {tag["key"]: tag["value"] for tag in root["tags"]}
            assert tags["kafka.client_id"] == "traced-producer", tags
            assert tags["span.kind"] == "server", tags
            process = t["processes"][root["processID"]]
            ptags = {tag["key"]: tag["value"] for tag in process["tags"]}
            assert process["serviceName"] == "strata-broker"
            assert ptags["strata.node_id"] == c.partition("traced")["leader"], ptags
    finally:
        c.stop_all()
