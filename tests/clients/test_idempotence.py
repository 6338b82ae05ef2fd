"""Idempotent producer under duplicated requests: a proxy between the client and the
broker sends every Produce request twice and hides the first answer, exactly what a
retry after a lost response looks like to the broker. Each record must be stored once,
in order."""
import socket
import struct
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port


def read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">i", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return head + body


class ReplayingProxy:
    def __init__(self, listen_port, upstream_port):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", listen_port))
        self.srv.listen(16)
        self.upstream = upstream_port
        self.duplicated = 0
        self.running = True
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while self.running:
            try:
                client, _ = self.srv.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            drop = []  # correlation ids whose first response is hidden
            lock = threading.Lock()
            threading.Thread(target=self.c2s, args=(client, up, drop, lock), daemon=True).start()
            threading.Thread(target=self.s2c, args=(up, client, drop, lock), daemon=True).start()

    def c2s(self, client, up, drop, lock):
        while True:
            f = read_frame(client)
            if f is None:
                up.close()
                return
            api_key, _, corr = struct.unpack(">hhi", f[4:12])
            if api_key == 0:  # Produce: send it twice
                with lock:
                    drop.append(corr)
                    self.duplicated += 1
                up.sendall(f)
            up.sendall(f)

    def s2c(self, up, client, drop, lock):
        while True:
            f = read_frame(up)
            if f is None:
                client.close()
                return
            (corr,) = struct.unpack(">i", f[4:8])
            with lock:
                if corr in drop:
                    drop.remove(corr)
                    continue
            client.sendall(f)

    def close(self):
        self.running = False
        self.srv.close()


def test_duplicated_produce_requests_store_each_record_once(broker_factory):
    proxy_port = free_port()
    broker = broker_factory({"STRATA_ADVERTISED_PORT": str(proxy_port)})
    proxy = ReplayingProxy(proxy_port, broker.port)
    try:
        bs = f"127.0.0.1:{proxy_port}"
        admin = AdminClient({"bootstrap.servers": bs})
        admin.create_topics([NewTopic("idem", num_partitions=1, replication_factor=1)])["idem"].result(30)
        p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 50})
        n = 5000
        for i in range(n):
            p.produce("idem", value=b"%06d" % i, partition=0)
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        assert proxy.duplicated > 10, "the proxy did not duplicate anything"

        c = Consumer({"bootstrap.servers": bs, "group.id": "i", "enable.auto.commit": False})
        c.assign([TopicPartition("idem", 0, 0)])
        values = []
        deadline = time.time() + 60
        while len(values) < n and time.time() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None
                values.append(m.value())
        # Nothing beyond n either.
        extra = c.consume(num_messages=10, timeout=1.0)
        c.close()
        assert values == [b"%06d" % i for i in range(n)]
        assert not [m for m in extra if m.error() is None]
    finally:
        proxy.close()
