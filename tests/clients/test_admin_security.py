"""The admin/internal gRPC listener secured (security::admin): the `strata` CLI
with and without the bearer token, with and without a client certificate; a
plaintext client on the TLS port; ACLs deciding who may administer the cluster;
and a 3-broker cluster whose brokers reach each other only over mutual TLS (Raft,
replication and forwarded calls), checked by acks=all writes reaching every
replica; and a running cluster switched from clear text to mutual TLS one broker
at a time, writing through every step."""
import os
import subprocess

from confluent_kafka import Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from conftest import BrokerProcess
from test_cluster import CLI, Cluster, read_partition, wait_until
from test_security import Pki

TOKEN = "t0ken-for-tests"


def cli(b, *args, **env):
    """Runs `strata` against broker b's admin listener: (exit code, stdout+stderr)."""
    out = subprocess.run([str(CLI), "--admin", b.admin, *args], capture_output=True, text=True,
                         timeout=60, env={**os.environ, **env})
    return out.returncode, out.stdout + out.stderr


def secured(tmp_path, pki, name, host="127.0.0.1", serial=2001, **env):
    """Broker settings for admin TLS with a certificate for `host` valid as server and
    client (brokers present it to each other), plus the token."""
    cert, key = pki.issue(name, name, serial, both=True, ips=(host,))
    (tmp_path / "token").write_text(TOKEN + "\n")
    return {
        "STRATA_ADMIN_SSL_CERTIFICATE_LOCATION": str(cert),
        "STRATA_ADMIN_SSL_KEY_LOCATION": str(key),
        "STRATA_ADMIN_SSL_CA_LOCATION": str(pki.ca),
        "STRATA_ADMIN_TOKEN_FILE": str(tmp_path / "token"),
        "STRATA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
        **env,
    }


def test_token_guards_the_admin_api(tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "wrong").write_text("not-the-token")
    b = BrokerProcess(tmp_path / "data", {"STRATA_ADMIN_TOKEN_FILE": str(tmp_path / "token")})
    b.start()
    try:
        rc, out = cli(b, "topic", "list")
        assert rc != 0 and "Unauthenticated" in out and "bearer token" in out, out
        rc, out = cli(b, "topic", "list", STRATA_ADMIN_TOKEN_FILE=str(tmp_path / "wrong"))
        assert rc != 0 and "invalid admin token" in out, out
        rc, out = cli(b, "topic", "create", "guarded", "--partitions", "2",
                      STRATA_ADMIN_TOKEN_FILE=str(tmp_path / "token"))
        assert rc == 0, out
        rc, out = cli(b, "topic", "list", STRATA_ADMIN_TOKEN_FILE=str(tmp_path / "token"))
        assert rc == 0 and "guarded" in out, out
        # The Kafka listener is not affected.
        assert "guarded" in AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(
            timeout=10).topics
        assert "admin call refused: not authenticated" in b.log_path.read_text()
    finally:
        b.kill()


def test_client_certificates_on_the_admin_listener_and_acls(tmp_path):
    pki = Pki(tmp_path / "pki")
    env = secured(tmp_path, pki, "broker-one", STRATA_AUTHORIZER_CLASS_NAME="acl",
                  STRATA_SUPER_USERS="User:ANONYMOUS;User:broker-one")
    b = BrokerProcess(tmp_path / "data", env)
    b.start()
    try:
        ops_cert, ops_key = pki.issue("ops", "ops", 2101, client=True)
        with_cert = {"STRATA_ADMIN_CA": str(pki.ca), "STRATA_ADMIN_CERT": str(ops_cert),
                     "STRATA_ADMIN_KEY": str(ops_key)}
        # Required client certificates: a TLS client with only the token is refused
        # in the handshake, a plaintext client gets a clean error; neither hurts the
        # broker.
        rc, out = cli(b, "topic", "list", STRATA_ADMIN_CA=str(pki.ca),
                      STRATA_ADMIN_TOKEN_FILE=str(tmp_path / "token"))
        assert rc != 0 and "PermissionDenied" not in out, out
        rc, out = cli(b, "topic", "list")
        assert rc != 0 and "PermissionDenied" not in out, out
        assert b.alive()
        # A valid certificate authenticates User:ops, who holds no ACL yet.
        rc, out = cli(b, "topic", "list", **with_cert)
        assert rc != 0 and "PermissionDenied" in out and "User:ops" in out, out
        a = AdminClient({"bootstrap.servers": b.bootstrap})  # PLAINTEXT: a super user
        binding = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                             "User:ops", "*", AclOperation.ALTER, AclPermissionType.ALLOW)
        for f in a.create_acls([binding]).values():
            f.result(timeout=30)
        # The ACL reaches the broker's copy of the metadata within moments.
        wait_until("User:ops allowed", lambda: cli(b, "topic", "create", "by-ops", **with_cert)[0] == 0)
        rc, out = cli(b, "topic", "list", **with_cert)
        assert rc == 0 and "by-ops" in out, out
        log = b.log_path.read_text()
        assert "admin client certificate accepted" in log and "principal=User:ops" in log
        assert "admin connection refused" in log
    finally:
        b.kill()


def test_brokers_replicate_over_mutual_tls(tmp_path):
    pki = Pki(tmp_path / "pki")
    c = Cluster(tmp_path, 3)
    for i, n in c.nodes.items():
        n.env.update(secured(tmp_path, pki, f"broker-{i}", host=n.host, serial=2200 + i))
    ops_cert, ops_key = pki.issue("ops", "ops", 2301, client=True)
    c.cli_env = {"STRATA_ADMIN_CA": str(pki.ca), "STRATA_ADMIN_CERT": str(ops_cert),
                 "STRATA_ADMIN_KEY": str(ops_key)}
    try:
        c.start()
        c.cli("topic", "create", "mtls", "--partitions", "3", "--replication-factor", "3",
              "--config", "min.insync.replicas=3")
        wait_until("all replicas in sync",
                   lambda: all(len(c.partition("mtls", p)["isr"]) == 3 for p in range(3)),
                   timeout=60)
        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "enable.idempotence": True})

        def write(n):
            acked = []
            for i in range(n):
                p.produce("mtls", value=str(i).encode(), partition=i % 3,
                          on_delivery=lambda err, m: acked.append(err))
            p.flush(60)
            assert len(acked) == n and not any(acked), acked[:3]

        write(300)
        # Rotation of broker 1's certificate: its new calls to the others connect with
        # the new files (which the others accept as a new connection), no restart.
        def accepted_from_1():
            return c.nodes[2].log_path.read_text().count("principal=User:broker-1")

        before = accepted_from_1()
        secured(tmp_path, pki, "broker-1", host=c.nodes[1].host, serial=2299)
        wait_until("broker 1 reconnects with its new certificate",
                   lambda: "new connections to the other brokers use them"
                   in c.nodes[1].log_path.read_text() and accepted_from_1() > before, timeout=30)
        write(300)
        # Every broker accepted the others' certificates, and no call got in without one.
        for i, n in c.nodes.items():
            log = n.log_path.read_text()
            assert "admin client certificate accepted" in log, i
            assert "not authenticated" not in log, i
    finally:
        c.stop_all()


PEER_NAME = "brokers.strata.test"


def test_a_running_cluster_switches_its_admin_listeners_to_tls_one_broker_at_a_time(tmp_path):
    """Token-only brokers become TLS brokers in three rolls (accept and send clear
    text → accept clear text → TLS only). Brokers dial each other by IP, and their
    certificates name only PEER_NAME (admin_ssl_peer_name). After every single
    restart, acks=all writes with min.insync.replicas=3 must reach all three
    replicas, so at no point can two brokers not talk."""
    pki = Pki(tmp_path / "pki")
    (tmp_path / "token").write_text(TOKEN + "\n")
    token = {"STRATA_ADMIN_TOKEN_FILE": str(tmp_path / "token")}
    c = Cluster(tmp_path, 3)
    for n in c.nodes.values():
        n.env.update(token)
    c.cli_env = token
    certs = {i: pki.issue(f"broker-{i}", f"broker-{i}", 2400 + i, both=True, ips=(),
                          dns=(PEER_NAME,)) for i in c.nodes}

    def tls_env(i, step):
        cert, key = certs[i]
        env = {
            "STRATA_ADMIN_SSL_CERTIFICATE_LOCATION": str(cert),
            "STRATA_ADMIN_SSL_KEY_LOCATION": str(key),
            "STRATA_ADMIN_SSL_CA_LOCATION": str(pki.ca),
            "STRATA_ADMIN_SSL_CLIENT_AUTH": "requested",
            "STRATA_ADMIN_SSL_PEER_NAME": PEER_NAME,
            "STRATA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
            "STRATA_ADMIN_SSL_ACCEPT_PLAINTEXT": "true" if step < 3 else "false",
            "STRATA_ADMIN_SSL_CONNECT_PLAINTEXT": "true" if step < 2 else "false",
        }
        return env

    p = None
    written = 0
    try:
        c.start()
        c.cli("topic", "create", "switch", "--partitions", "3", "--replication-factor", "3",
              "--config", "min.insync.replicas=3")
        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 60000})

        def in_sync():
            wait_until("all replicas in sync",
                       lambda: all(len(c.partition("switch", q)["isr"]) == 3 for q in range(3)),
                       timeout=60)

        def write(n=150):
            nonlocal written
            acked = []
            for k in range(n):
                p.produce("switch", value=str(written + k).encode(), partition=k % 3,
                          on_delivery=lambda err, m: acked.append(err))
            p.flush(90)
            assert len(acked) == n and not any(acked), acked[:3]
            written += n

        in_sync()
        write()
        for step in (1, 2, 3):
            if step == 3:
                # Every listener serves TLS now; the CLI switches before they stop
                # serving clear text, verifying the shared name.
                c.cli_env = {**token, "STRATA_ADMIN_CA": str(pki.ca),
                             "STRATA_ADMIN_SERVER_NAME": PEER_NAME}
            for i, n in c.nodes.items():
                n.stop()
                n.env.update(tls_env(i, step))
                n.start()
                in_sync()
                write()
        in_sync()
        # Clear text is refused now; the brokers spoke TLS to each other (their
        # certificates were accepted) and no call got in unauthenticated.
        rc, out = cli(c.nodes[1], "topic", "list", **token)
        assert rc != 0, out
        for i, n in c.nodes.items():
            log = n.log_path.read_text()
            assert "admin client certificate accepted" in log, i
            assert "not authenticated" not in log, i
        # Every acknowledged record is there, once (idempotent producer).
        values = sorted(v for q in range(3) for v in read_partition(c.bootstrap(), "switch", q))
        assert values == list(range(written)), (len(values), written)
    finally:
        c.stop_all()
