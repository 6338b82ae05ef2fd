"""Authentication on named listeners, with real clients against the real broker:
TLS (certificates made by the `openssl` CLI in the test's tmp dir), SASL PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512 over SASL_SSL with confluent-kafka, kcat and Kafka's
Java client; SCRAM users managed with Kafka's `kafka-configs`; failures (wrong
password, protocol mismatches, requests before authentication, oversized auth
frames) that close only their own connection; certificate rotation without a
restart; KIP-368 re-authentication."""
import socket
import ssl
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from conftest import BrokerProcess, free_port
from test_cluster import Cluster
from test_kafka_tools import tool
from test_txn_tools import java_cmd

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carl": "carl-secret"}


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A test CA issuing server and client certificates."""

    def __init__(self, d):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        openssl(self.dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                "-out", "ca.pem", "-days", "2", "-subj", "/CN=Strata Test CA")
        self.ca = self.dir / "ca.pem"

    def issue(self, name, cn, serial, client=False, ips=("127.0.0.1",), both=False,
              dns=("localhost",)):
        """A certificate for a server (SANs: `dns` and `ips`), a client, or with
        `both` one valid as either (a broker on its admin listener)."""
        ext = self.dir / f"{name}.ext"
        san = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips])
        usage = "serverAuth,clientAuth" if both else "serverAuth"
        ext.write_text("extendedKeyUsage=clientAuth\n" if client else
                       f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
        openssl(self.dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/O=Strata Tests/CN={cn}")
        openssl(self.dir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem", "-extfile", str(ext))
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


def start_secure(d, client_auth="requested", **env):
    """A broker with PLAINTEXT (the bootstrap the fixtures use), SASL_SSL, SSL and
    SASL_PLAINTEXT listeners; its certificate files live at d/tls.crt, d/tls.key."""
    d = Path(d)
    pki = Pki(d / "pki")
    cert, key = pki.issue("server", "broker-one", 1001)
    (d / "tls.crt").write_bytes(cert.read_bytes())
    (d / "tls.key").write_bytes(key.read_bytes())
    b = BrokerProcess(d / "data")
    b.ports = {name: free_port() for name in ("SASL_SSL", "SSL", "SASL_PLAINTEXT")}
    listeners = [f"PLAINTEXT://127.0.0.1:{b.port}"] + [
        f"{name}://127.0.0.1:{port}" for name, port in b.ports.items()]
    b.env.update({
        "STRATA_LISTENERS": ",".join(listeners),
        "STRATA_SSL_CERTIFICATE_LOCATION": str(d / "tls.crt"),
        "STRATA_SSL_KEY_LOCATION": str(d / "tls.key"),
        "STRATA_SSL_CA_LOCATION": str(pki.ca),
        "STRATA_SSL_CLIENT_AUTH": client_auth,
        "STRATA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
        **env,
    })
    b.pki = pki
    b.dir = d
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    ups = [UserScramCredentialUpsertion(u, ScramCredentialInfo(m, 4096), p.encode())
           for u, p in USERS.items()
           for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for f in admin.alter_user_scram_credentials(ups).values():
        f.result(timeout=30)
    return b


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    b = start_secure(tmp_path_factory.mktemp("secure"))
    yield b
    b.kill()


def sasl_conf(b, mech, user, password, **extra):
    return {"bootstrap.servers": f"127.0.0.1:{b.ports['SASL_SSL']}",
            "security.protocol": "SASL_SSL", "sasl.mechanisms": mech,
            "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(b.pki.ca), **extra}


def roundtrip(conf, topic, n=10):
    p = Producer(conf)
    for i in range(n):
        p.produce(topic, value=str(i).encode())
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = [], time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(int(m.value()))
    c.close()
    assert sorted(got) == list(range(n))


def metric(b, name):
    return sum(float(line.split()[-1]) for line in b.metrics().splitlines()
               if line.startswith(name) and not line.startswith("#"))


def log_text(b):
    return b.log_path.read_text(errors="replace")


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_confluent_kafka_over_sasl_ssl(secure, mech):
    conf = sasl_conf(secure, mech, "alice", USERS["alice"])
    # The brokers are advertised on the listener the client came in on.
    md = AdminClient(conf).list_topics(timeout=20)
    assert [(x.host, x.port) for x in md.brokers.values()] == \
        [("127.0.0.1", secure.ports["SASL_SSL"])]
    roundtrip(conf, f"sasl-{mech.lower()}")


def test_wrong_password_fails_cleanly_and_others_are_served(secure):
    before = metric(secure, "strata_authentication_failures")
    errors = []
    p = Producer({**sasl_conf(secure, "SCRAM-SHA-256", "alice", "not-the-password"),
                  "error_cb": errors.append})
    p.produce("wrong-pw", value=b"x")
    deadline = time.time() + 20
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.time() < deadline:
        p.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert "invalid credentials" in str([e.str() for e in errors])
    plain_errors = []
    p2 = Producer({**sasl_conf(secure, "PLAIN", "nobody", "guess"), "error_cb": plain_errors.append})
    p2.produce("wrong-pw", value=b"x")
    deadline = time.time() + 20
    while not plain_errors and time.time() < deadline:
        p2.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in plain_errors), plain_errors
    assert metric(secure, "strata_authentication_failures") >= before + 2
    log = log_text(secure)
    assert "authentication failed" in log
    assert "not-the-password" not in log and "guess" not in log
    del p, p2
    roundtrip(sasl_conf(secure, "SCRAM-SHA-512", "bob", USERS["bob"]), "after-wrong-pw")


def test_protocol_mismatches_fail_cleanly(secure):
    # A plaintext client on the TLS port: no metadata, no crash.
    errors = []
    a = AdminClient({"bootstrap.servers": f"127.0.0.1:{secure.ports['SSL']}", "error_cb": errors.append})
    with pytest.raises(Exception):
        a.list_topics(timeout=5)
    # A TLS client on the plaintext port.
    b = AdminClient({"bootstrap.servers": secure.bootstrap, "security.protocol": "SSL",
                     "ssl.ca.location": str(secure.pki.ca), "error_cb": errors.append})
    with pytest.raises(Exception):
        b.list_topics(timeout=5)
    # Raw garbage on the TLS port and a TLS handshake on the plaintext one.
    with socket.create_connection(("127.0.0.1", secure.ports["SSL"])) as s:
        s.sendall(b"\x00\x00\x00\x10" + b"\x00" * 16)
        s.settimeout(15)
        # At most a TLS alert, then the end of the stream.
        received = b""
        while True:
            try:
                chunk = s.recv(100)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        assert len(received) < 100, received
    ctx = ssl.create_default_context(cafile=str(secure.pki.ca))
    with socket.create_connection(("127.0.0.1", secure.port)) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").do_handshake()
    assert secure.alive()
    assert "a TLS handshake on a plaintext listener" in log_text(secure)
    assert "TLS handshake failed" in log_text(secure)
    roundtrip(sasl_conf(secure, "SCRAM-SHA-256", "alice", USERS["alice"]), "after-mismatch")
    roundtrip({"bootstrap.servers": secure.bootstrap}, "after-mismatch-plain")


# Raw Kafka frames for the SASL state machine (SASL_PLAINTEXT listener).
def frame(api, version, corr, body, client=b"raw"):
    msg = struct.pack(">hhih", api, version, corr, len(client)) + client + body
    return struct.pack(">i", len(msg)) + msg


def kstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def read_frame(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    (n,) = struct.unpack(">i", exact(4))
    return exact(n)


def closed_by_broker(s, timeout=15):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def metadata_v1(corr):
    return frame(3, 1, corr, struct.pack(">i", -1))


def handshake(s, mech, version=1):
    s.sendall(frame(17, version, 1, kstr(mech)))
    body = read_frame(s)
    return struct.unpack(">h", body[4:6])[0]


def authenticate_plain(s, user, password, version=1):
    token = b"\x00" + user.encode() + b"\x00" + password.encode()
    s.sendall(frame(36, version, 2, struct.pack(">i", len(token)) + token))
    body = read_frame(s)[4:]
    (err,) = struct.unpack(">h", body[:2])
    (mlen,) = struct.unpack(">h", body[2:4])
    rest = body[4 + max(mlen, 0):]
    (alen,) = struct.unpack(">i", rest[:4])
    lifetime = struct.unpack(">q", rest[4 + alen:12 + alen])[0] if version >= 1 else None
    return err, lifetime


def sasl_plaintext(b):
    return socket.create_connection(("127.0.0.1", b.ports["SASL_PLAINTEXT"]), timeout=15)


def test_sasl_state_machine_on_raw_frames(secure):
    # A request other than ApiVersions/SaslHandshake before authentication closes.
    with sasl_plaintext(secure) as s:
        s.sendall(metadata_v1(5))
        assert closed_by_broker(s)
    # An oversized frame before authentication closes, without reading its body.
    with sasl_plaintext(secure) as s:
        s.sendall(struct.pack(">i", 8 << 20) + b"\x00\x11")
        assert closed_by_broker(s)
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM (33), then closed.
    with sasl_plaintext(secure) as s:
        assert handshake(s, "GSSAPI") == 33
        assert closed_by_broker(s)
    # A malformed PLAIN token: SASL_AUTHENTICATION_FAILED (58), then closed.
    with sasl_plaintext(secure) as s:
        assert handshake(s, "PLAIN") == 0
        s.sendall(frame(36, 1, 2, struct.pack(">i", 3) + b"abc"))
        body = read_frame(s)[4:]
        assert struct.unpack(">h", body[:2])[0] == 58
        assert closed_by_broker(s)
    # Truncated and garbage SASL requests close the connection.
    for junk in (frame(17, 1, 1, b"\x7f\xff"), frame(36, 2, 1, b"\xff" * 9)):
        with sasl_plaintext(secure) as s:
            s.sendall(junk)
            assert closed_by_broker(s)
    # PLAIN over SaslHandshake v1 + SaslAuthenticate: then anything is served.
    with sasl_plaintext(secure) as s:
        assert handshake(s, "PLAIN") == 0
        assert authenticate_plain(s, "alice", USERS["alice"]) == (0, 0)
        s.sendall(metadata_v1(9))
        assert struct.unpack(">i", read_frame(s)[:4])[0] == 9
    # The legacy exchange: SaslHandshake v0, then a bare token answered bare.
    with sasl_plaintext(secure) as s:
        assert handshake(s, "PLAIN", version=0) == 0
        token = b"\x00bob\x00" + USERS["bob"].encode()
        s.sendall(struct.pack(">i", len(token)) + token)
        assert read_frame(s) == b""
        s.sendall(metadata_v1(11))
        assert struct.unpack(">i", read_frame(s)[:4])[0] == 11
    # SaslHandshake on a plaintext listener: ILLEGAL_SASL_STATE (34), still served.
    with socket.create_connection(("127.0.0.1", secure.port), timeout=15) as s:
        assert handshake(s, "PLAIN") == 34
        s.sendall(metadata_v1(12))
        assert struct.unpack(">i", read_frame(s)[:4])[0] == 12
    assert secure.alive()


def test_kcat_over_sasl_ssl(secure, tmp_path):
    topic = "kcat-sasl"
    common = ["kcat", "-b", f"127.0.0.1:{secure.ports['SASL_SSL']}", "-X", "security.protocol=SASL_SSL",
              "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=bob",
              "-X", f"sasl.password={USERS['bob']}", "-X", f"ssl.ca.location={secure.pki.ca}"]
    subprocess.run(common + ["-P", "-t", topic], input="one\ntwo\nthree\n", text=True,
                   check=True, timeout=60)
    out = subprocess.run(common + ["-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["one", "two", "three"], out
    bad = subprocess.run(["kcat", "-b", f"127.0.0.1:{secure.ports['SASL_SSL']}", "-X",
                          "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN", "-X",
                          "sasl.username=bob", "-X", "sasl.password=nope", "-X",
                          f"ssl.ca.location={secure.pki.ca}", "-L", "-m", "5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Authentication failed" in bad.stdout + bad.stderr, bad


def configs(tmp_path, bs, command_config, *args, check=True):
    return tool("kafka.admin.ConfigCommand", "--bootstrap-server", bs, "--command-config",
                str(command_config), *args, tmp=tmp_path, check=check)


def java_props(tmp_path, b, mech, user, password):
    module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mech == "PLAIN"
              else "org.apache.kafka.common.security.scram.ScramLoginModule")
    p = tmp_path / f"{user}-{mech}.properties"
    p.write_text("security.protocol=SASL_SSL\n"
                 f"sasl.mechanism={mech}\n"
                 f'sasl.jaas.config={module} required username="{user}" password="{password}";\n'
                 "ssl.truststore.type=PEM\n"
                 f"ssl.truststore.location={b.pki.ca}\n")
    return p


def test_kafka_configs_manages_scram_users(secure, tmp_path):
    bs = f"127.0.0.1:{secure.ports['SASL_SSL']}"
    admin = java_props(tmp_path, secure, "SCRAM-SHA-512", "alice", USERS["alice"])
    configs(tmp_path, bs, admin, "--alter", "--entity-type", "users", "--entity-name", "carol",
            "--add-config", "SCRAM-SHA-512=[iterations=8192,password=carol-pw],SCRAM-SHA-256=[password=carol-pw]")
    out = configs(tmp_path, bs, admin, "--describe", "--entity-type", "users", "--entity-name", "carol")
    assert "SCRAM-SHA-512=iterations=8192" in out and "SCRAM-SHA-256=iterations=4096" in out, out
    # carol authenticates with her new credentials (SCRAM and PLAIN).
    roundtrip(sasl_conf(secure, "SCRAM-SHA-512", "carol", "carol-pw"), "carol-topic", n=3)
    roundtrip(sasl_conf(secure, "PLAIN", "carol", "carol-pw"), "carol-topic-plain", n=3)
    every = configs(tmp_path, bs, admin, "--describe", "--entity-type", "users")
    assert "carol" in every and "alice" in every, every
    configs(tmp_path, bs, admin, "--alter", "--entity-type", "users", "--entity-name", "carol",
            "--delete-config", "SCRAM-SHA-512,SCRAM-SHA-256")
    out = configs(tmp_path, bs, admin, "--describe", "--entity-type", "users", "--entity-name", "carol")
    assert "SCRAM-SHA" not in out, out
    errors = []
    p = Producer({**sasl_conf(secure, "SCRAM-SHA-512", "carol", "carol-pw"), "error_cb": errors.append})
    p.produce("carol-topic", value=b"x")
    deadline = time.time() + 20
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    # Too few iterations: refused with Kafka's reason.
    bad = configs(tmp_path, bs, admin, "--alter", "--entity-type", "users", "--entity-name", "dan",
                  "--add-config", "SCRAM-SHA-256=[iterations=100,password=x]", check=False)
    assert bad.returncode != 0 and "Iterations" in bad.stdout + bad.stderr, bad


def serial_and_subject(b):
    return serial_and_subject_with(ssl.create_default_context(cafile=str(b.pki.ca)), b)


def api_versions_over(s, corr):
    s.sendall(frame(18, 0, corr, b""))
    return struct.unpack(">ih", read_frame(s)[:6])


def test_certificates_are_reloaded_without_a_restart(tmp_path):
    b = start_secure(tmp_path, client_auth="required")
    try:
        client_cert, client_key = b.pki.issue("client", "Alice-App", 7, client=True)
        ctx = ssl.create_default_context(cafile=str(b.pki.ca))
        ctx.load_cert_chain(str(client_cert), str(client_key))
        assert serial_and_subject_with(ctx, b) == ("03E9", "broker-one")
        # mTLS: the principal comes from the certificate subject by the mapping rule.
        assert "principal=User:alice-app" in log_text(b)
        # Without a client certificate the handshake is refused.
        with pytest.raises((ssl.SSLError, OSError)):
            serial_and_subject(b)
        # A real client with its certificate, connected before the rotation.
        mtls = {"bootstrap.servers": f"127.0.0.1:{b.ports['SSL']}", "security.protocol": "SSL",
                "ssl.ca.location": str(b.pki.ca), "ssl.certificate.location": str(client_cert),
                "ssl.key.location": str(client_key)}
        producer = Producer(mtls)
        for i in range(5):
            producer.produce("mtls", value=str(i).encode())
        assert producer.flush(30) == 0
        existing = ctx.wrap_socket(socket.create_connection(("127.0.0.1", b.ports["SSL"]), timeout=15),
                                   server_hostname="127.0.0.1")
        assert api_versions_over(existing, 1) == (1, 0)
        old_serial = existing.getpeercert()["serialNumber"]
        # Rotate: a new certificate and key replace the files in place.
        cert, key = b.pki.issue("server2", "broker-two", 2002)
        (b.dir / "tls.key").write_bytes(key.read_bytes())
        (b.dir / "tls.crt").write_bytes(cert.read_bytes())
        assert serial_and_subject_with(ctx, b) == ("07D2", "broker-two")
        # The connection made before keeps working, on the session it negotiated.
        assert api_versions_over(existing, 2) == (2, 0)
        assert existing.getpeercert()["serialNumber"] == old_serial == "03E9"
        existing.close()
        for i in range(5, 10):
            producer.produce("mtls", value=str(i).encode())
        assert producer.flush(30) == 0
        assert "certificate reloaded" in log_text(b)
        assert b.alive()
        # The SCRAM users are in the metadata quorum: a restarted broker has them.
        b.stop()
        b.start()
        # (SASL_PLAINTEXT: with `required`, the SASL_SSL listener wants a certificate too.)
        roundtrip({**sasl_conf(b, "SCRAM-SHA-512", "alice", USERS["alice"]),
                   "bootstrap.servers": f"127.0.0.1:{b.ports['SASL_PLAINTEXT']}",
                   "security.protocol": "SASL_PLAINTEXT"}, "after-restart", n=3)
    finally:
        b.kill()


def serial_and_subject_with(ctx, b):
    with socket.create_connection(("127.0.0.1", b.ports["SSL"]), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert api_versions_over(s, 3) == (3, 0)
            cert = s.getpeercert()
            return cert["serialNumber"], dict(x[0] for x in cert["subject"])["commonName"]


def test_reauthentication_kip_368(tmp_path):
    b = start_secure(tmp_path, STRATA_CONNECTIONS_MAX_REAUTH_MS="3000")
    try:
        # The session lifetime is announced; a request after it without
        # re-authenticating closes the connection.
        with sasl_plaintext(b) as s:
            assert handshake(s, "PLAIN") == 0
            assert authenticate_plain(s, "alice", USERS["alice"]) == (0, 3000)
            s.sendall(metadata_v1(3))
            read_frame(s)
            time.sleep(3.5)
            s.sendall(metadata_v1(4))
            assert closed_by_broker(s)
        # Re-authenticating on the same connection renews the session; as another
        # principal it is refused.
        with sasl_plaintext(b) as s:
            assert handshake(s, "PLAIN") == 0
            assert authenticate_plain(s, "alice", USERS["alice"]) == (0, 3000)
            time.sleep(2)
            assert handshake(s, "PLAIN") == 0
            assert authenticate_plain(s, "alice", USERS["alice"]) == (0, 3000)
            time.sleep(2)
            s.sendall(metadata_v1(5))
            assert struct.unpack(">i", read_frame(s)[:4])[0] == 5
            assert handshake(s, "PLAIN") == 0
            assert authenticate_plain(s, "bob", USERS["bob"])[0] == 58
            assert closed_by_broker(s)
        assert "session of User:alice expired" in log_text(b)
        # The Java client re-authenticates by itself (SCRAM-SHA-512 over SASL_SSL) and
        # its connections are never cut.
        topic = "java-reauth"
        out = subprocess.run(java_cmd(tmp_path, "SaslClient", f"127.0.0.1:{b.ports['SASL_SSL']}", topic,
                                      str(b.pki.ca), "SCRAM-SHA-512", "bob", USERS["bob"], "8"),
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
        produced = int(out.stdout.split("PRODUCED ")[1].split()[0])
        assert produced >= 20 and f"CONSUMED {produced}" in out.stdout, out.stdout
        log = log_text(b)
        reauths = [line for line in log.splitlines()
                   if "authenticated" in line and "User:bob" in line and "reauth=true" in line]
        assert len(reauths) >= 2, log[-3000:]
        assert "session of User:bob expired" not in log
        # librdkafka (confluent-kafka 2.16) re-authenticates too.
        errors, delivered = [], []
        p = Producer({**sasl_conf(b, "SCRAM-SHA-256", "carl", USERS["carl"]), "acks": "all",
                      "error_cb": errors.append})
        end = time.time() + 8
        while time.time() < end:
            p.produce("rdkafka-reauth", value=b"x",
                      on_delivery=lambda err, m: delivered.append(err))
            p.poll(0.1)
        assert p.flush(30) == 0
        assert delivered and all(e is None for e in delivered), delivered[:3]
        assert not errors, errors
        log = log_text(b)
        assert len([line for line in log.splitlines() if "User:carl" in line and "reauth=true" in line]) >= 2
        assert "session of User:carl expired" not in log
    finally:
        b.kill()


def test_a_cluster_advertises_each_listener_and_shares_scram_users(tmp_path):
    """Three brokers, each with a PLAINTEXT and a SASL_SSL listener: every broker
    learns the others' endpoints of each listener from their registrations in the
    metadata quorum, and a SCRAM user created through one broker authenticates on
    every other."""
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("server", "cluster", 1, ips=("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    c = Cluster(tmp_path, 3)
    sasl_ports = {}
    for i, n in c.nodes.items():
        sasl_ports[i] = free_port(n.host)
        n.env.update({
            "STRATA_LISTENERS": f"PLAINTEXT://{n.host}:{n.port},SASL_SSL://{n.host}:{sasl_ports[i]}",
            "STRATA_SSL_CERTIFICATE_LOCATION": str(cert),
            "STRATA_SSL_KEY_LOCATION": str(key),
        })
    try:
        c.start()
        admin = AdminClient({"bootstrap.servers": c.nodes[1].bootstrap})
        up = UserScramCredentialUpsertion("dana", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"dana-secret")
        for f in admin.alter_user_scram_credentials([up]).values():
            f.result(timeout=30)
        plain = AdminClient({"bootstrap.servers": c.nodes[2].bootstrap}).list_topics(timeout=20)
        assert sorted((b.id, b.host, b.port) for b in plain.brokers.values()) == \
            [(i, n.host, n.port) for i, n in c.nodes.items()]
        for via in (2, 3):
            conf = {"bootstrap.servers": f"{c.nodes[via].host}:{sasl_ports[via]}",
                    "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                    "sasl.username": "dana", "sasl.password": "dana-secret",
                    "ssl.ca.location": str(pki.ca)}

            def advertised():
                md = AdminClient(conf).list_topics(timeout=20)
                return sorted((b.id, b.host, b.port) for b in md.brokers.values())
            want = [(i, n.host, sasl_ports[i]) for i, n in c.nodes.items()]
            deadline = time.time() + 30
            while advertised() != want and time.time() < deadline:
                time.sleep(0.5)
            assert advertised() == want
        # Replicated, leaders spread over the brokers: every broker's SASL_SSL
        # endpoint serves produce, fetch and the group coordinator.
        from confluent_kafka.admin import NewTopic
        for f in admin.create_topics([NewTopic("spread", 3, 3)]).values():
            f.result(timeout=30)
        roundtrip({**conf, "acks": "all"}, "spread", n=30)
    finally:
        c.stop_all()
