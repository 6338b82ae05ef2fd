"""kcat (Debian's, on an older librdkafka that uses older protocol versions):
metadata listing, and a file produced line by line comes back byte-identical."""
import subprocess

from confluent_kafka.admin import AdminClient, NewTopic


def kcat(*args, input=None, timeout=60):
    return subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout, check=True)


def test_kcat_lists_topic_and_partitions(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("kcat-meta", num_partitions=4, replication_factor=1)])["kcat-meta"].result(30)
    out = kcat("-L", "-b", broker.bootstrap, "-t", "kcat-meta").stdout.decode()
    assert 'topic "kcat-meta" with 4 partitions' in out, out
    for p in range(4):
        assert f"partition {p}, leader 1" in out, out
    assert f"broker 1 at {broker.bootstrap}" in out, out


def test_kcat_file_round_trip_is_byte_identical(broker, tmp_path):
    lines = [f"line {i} ".encode() + bytes(range(32, 127)) * (i % 7) for i in range(5000)]
    data = b"\n".join(lines) + b"\n"
    src = tmp_path / "input.txt"
    src.write_bytes(data)
    kcat("-P", "-b", broker.bootstrap, "-t", "kcat-file", "-p", "0", "-l", str(src))
    out = kcat("-C", "-b", broker.bootstrap, "-t", "kcat-file", "-p", "0", "-o", "beginning", "-e", "-D", "\n").stdout
    assert out == data
    # Offsets as kcat sees them are contiguous from zero.
    offs = kcat("-C", "-b", broker.bootstrap, "-t", "kcat-file", "-p", "0", "-e", "-f", "%o\n").stdout.split()
    assert [int(o) for o in offs] == list(range(5000))
