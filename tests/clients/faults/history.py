"""The history of one fault run: every client operation as invoke / ok / fail / info
(info = outcome unknown), with the time it happened on CLOCK_MONOTONIC, which is the
same clock in every process of the machine, so histories written by consumer
subprocesses merge with the test's own by time."""
import json
import threading
import time
from pathlib import Path


class History:
    """Appends operations to a JSONL file (one per line, flushed at once, so a history
    survives a test that dies half-way) and keeps them in memory."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", buffering=1)
        self.ops = []

    def record(self, process, type_, f, **fields):
        op = {"time": time.monotonic(), "process": process, "type": type_, "f": f, **fields}
        line = json.dumps(op, separators=(",", ":"))
        with self._lock:
            self.ops.append(op)
            self._file.write(line + "\n")
        return op

    def close(self):
        with self._lock:
            self._file.close()


def load(*paths):
    """Every operation of the given JSONL files, ordered by time. A truncated last line
    (a consumer killed while writing) is skipped: it was never a completed record."""
    ops = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    ops.sort(key=lambda op: op["time"])
    return ops
