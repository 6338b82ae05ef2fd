"""Authorization with Kafka's ACLs, real clients against the real broker: Kafka's
`kafka-acls` tool adds, lists and removes ACLs; SCRAM users over SASL_SSL
(confluent-kafka, Kafka's Java client) get Kafka's authorization errors where they
hold no ACL; prefixed ACLs grant, DENY overrides ALLOW, super users and
`allow_everyone_if_no_acl_found` behave as in Kafka; ACLs survive a restart.

The PLAINTEXT listener (User:ANONYMOUS) is a super user here: the fixtures
administer the broker through it, as an inter-broker listener would."""
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource, NewTopic, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from conftest import free_port

from test_kafka_tools import tool
from test_cluster import Cluster
from test_security import USERS, Pki, java_props, metric, sasl_conf, start_secure
from test_txn_tools import java_cmd

ACL_ENV = {"STRATA_AUTHORIZER_CLASS_NAME": "acl",
           "STRATA_SUPER_USERS": "User:ANONYMOUS;User:alice"}


@pytest.fixture(scope="module")
def authz(tmp_path_factory):
    b = start_secure(tmp_path_factory.mktemp("acls"), **ACL_ENV)
    yield b
    b.kill()


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def acls_tool(tmp_path, b, *args, check=True):
    props = java_props(tmp_path, b, "SCRAM-SHA-512", "alice", USERS["alice"])
    return tool("org.apache.kafka.tools.AclCommand", "--bootstrap-server",
                f"127.0.0.1:{b.ports['SASL_SSL']}", "--command-config", str(props), *args,
                tmp=tmp_path, check=check)


def create_topic(b, name, partitions=1):
    a = admin(b)  # kept alive until the futures are done
    for f in a.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)


def allow(b, rt, name, who, op, pattern=ResourcePatternType.LITERAL,
          perm=AclPermissionType.ALLOW):
    binding = AclBinding(rt, name, pattern, f"User:{who}", "*", op, perm)
    a = admin(b)
    for f in a.create_acls([binding]).values():
        f.result(timeout=30)
    return binding


def drop_all(b, who):
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{who}", None,
                           AclOperation.ANY, AclPermissionType.ANY)
    a = admin(b)
    for f in a.delete_acls([flt]).values():
        f.result(timeout=30)


def produce_error(conf, topic):
    """The delivery error of one record (None when it was written)."""
    got = []
    p = Producer({**conf, "message.timeout.ms": 10000, "retries": 0})
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: got.append(err))
    p.flush(20)
    assert got, "no delivery report"
    return got[0]


def consume_error(conf, topic, group):
    """The first error a consumer of `topic` in `group` sees (None if it got a record)."""
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().code()
            return None
    finally:
        c.close()
    raise AssertionError("neither a record nor an error within 30s")


def test_kafka_acls_tool_adds_lists_and_removes(authz, tmp_path):
    out = acls_tool(tmp_path, authz, "--add", "--allow-principal", "User:bob", "--operation",
                    "Read", "--operation", "Write", "--topic", "tool-", "--resource-pattern-type",
                    "prefixed")
    assert "PREFIXED" in out, out
    acls_tool(tmp_path, authz, "--add", "--allow-principal", "User:bob", "--operation", "Read",
              "--group", "tool-group")
    acls_tool(tmp_path, authz, "--add", "--allow-principal", "User:bob", "--operation",
              "Describe", "--cluster")
    acls_tool(tmp_path, authz, "--add", "--deny-principal", "User:bob", "--operation", "Write",
              "--transactional-id", "tool-txn")
    listed = acls_tool(tmp_path, authz, "--list")
    for needle in ("name=tool-, patternType=PREFIXED", "name=tool-group", "name=kafka-cluster",
                   "name=tool-txn", "permissionType=DENY"):
        assert needle in listed, listed
    only_topic = acls_tool(tmp_path, authz, "--list", "--topic", "tool-",
                           "--resource-pattern-type", "prefixed")
    assert "tool-group" not in only_topic and "operation=READ" in only_topic, only_topic
    # A topic named tool-x is covered by the prefix (match), not listed by literal name.
    matched = acls_tool(tmp_path, authz, "--list", "--topic", "tool-x",
                        "--resource-pattern-type", "match")
    assert "name=tool-, patternType=PREFIXED" in matched, matched
    acls_tool(tmp_path, authz, "--remove", "--force", "--allow-principal", "User:bob",
              "--operation", "Read", "--operation", "Write", "--topic", "tool-",
              "--resource-pattern-type", "prefixed")
    acls_tool(tmp_path, authz, "--remove", "--force", "--group", "tool-group")
    acls_tool(tmp_path, authz, "--remove", "--force", "--cluster")
    acls_tool(tmp_path, authz, "--remove", "--force", "--transactional-id", "tool-txn")
    assert "tool-" not in acls_tool(tmp_path, authz, "--list")
    # A non-super user may not manage ACLs: CLUSTER_AUTHORIZATION_FAILED.
    props = java_props(tmp_path, authz, "SCRAM-SHA-512", "carl", USERS["carl"])
    bad = tool("org.apache.kafka.tools.AclCommand", "--bootstrap-server",
               f"127.0.0.1:{authz.ports['SASL_SSL']}", "--command-config", str(props), "--add",
               "--allow-principal", "User:carl", "--operation", "All", "--topic", "*",
               tmp=tmp_path, check=False)
    assert "ClusterAuthorizationException" in bad.stdout + bad.stderr, bad


def create_error(conf, name):
    """The error code of creating topic `name` as `conf` (None on success)."""
    a = AdminClient(conf)
    f = a.create_topics([NewTopic(name, 1, 1)])[name]
    try:
        f.result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0].code()


def visible_topics(conf):
    return set(AdminClient(conf).list_topics(timeout=20).topics)


def test_unauthorized_principal_gets_kafka_errors(authz):
    topic = f"secret-{uuid.uuid4().hex[:6]}"
    create_topic(authz, topic)
    bob = sasl_conf(authz, "SCRAM-SHA-256", "bob", USERS["bob"])
    denied_before = metric(authz, 'strata_authorization_decisions_total{decision="denied"')
    # Produce without WRITE: TOPIC_AUTHORIZATION_FAILED.
    err = produce_error(bob, topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # Describe: the topic is not listed to bob.
    assert topic not in visible_topics(bob)
    allow(authz, ResourceType.TOPIC, topic, "bob", AclOperation.WRITE)
    assert produce_error(bob, topic) is None
    assert topic in visible_topics(bob)  # WRITE implies DESCRIBE
    # Group join without READ on the group: GROUP_AUTHORIZATION_FAILED.
    assert consume_error(bob, topic, "bob-group") == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Fetch with the group allowed but no READ on the topic.
    allow(authz, ResourceType.GROUP, "bob-group", "bob", AclOperation.READ)
    assert consume_error(bob, topic, "bob-group") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    allow(authz, ResourceType.TOPIC, topic, "bob", AclOperation.READ)
    assert consume_error(bob, topic, "bob-group") is None
    # Topic creation without CREATE: TOPIC_AUTHORIZATION_FAILED; with CREATE on a
    # prefix, allowed.
    assert create_error(bob, "bob-made-1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    allow(authz, ResourceType.TOPIC, "bob-", "bob", AclOperation.CREATE,
          pattern=ResourcePatternType.PREFIXED)
    assert create_error(bob, "bob-made-2") is None
    assert create_error(bob, "other-made") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert metric(authz, 'strata_authorization_decisions_total{decision="denied"') > denied_before
    drop_all(authz, "bob")
    assert topic not in visible_topics(bob)


def config_errors(futures):
    """The error code of each resource of a config request (None when it succeeded)."""
    out = {}
    for res, f in futures.items():
        try:
            f.result(timeout=30)
            out[res.name] = None
        except KafkaException as e:
            out[res.name] = e.args[0].code()
    return out


def test_config_requests_are_authorized_per_resource(authz):
    """DescribeConfigs needs DESCRIBE_CONFIGS and (Incremental)AlterConfigs needs
    ALTER_CONFIGS on each resource: a denied topic gets TOPIC_AUTHORIZATION_FAILED and
    a broker CLUSTER_AUTHORIZATION_FAILED, while the allowed resources of the same
    request are served."""
    mine, theirs = (f"cfg-{w}-{uuid.uuid4().hex[:6]}" for w in ("mine", "theirs"))
    create_topic(authz, mine)
    create_topic(authz, theirs)
    carl = AdminClient(sasl_conf(authz, "SCRAM-SHA-512", "carl", USERS["carl"]))
    topics = [ConfigResource(ResourceType.TOPIC, t) for t in (mine, theirs)]
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert config_errors(carl.describe_configs(topics)) == {mine: denied, theirs: denied}
    broker = ConfigResource(ResourceType.BROKER, "1")
    assert config_errors(carl.describe_configs([broker])) == {
        "1": KafkaError.CLUSTER_AUTHORIZATION_FAILED}
    allow(authz, ResourceType.TOPIC, mine, "carl", AclOperation.DESCRIBE_CONFIGS)
    assert config_errors(carl.describe_configs(topics)) == {mine: None, theirs: denied}
    retention = [ConfigEntry("retention.ms", "3600000",
                             incremental_operation=AlterConfigOpType.SET)]
    alter = [ConfigResource(ResourceType.TOPIC, t, incremental_configs=retention)
             for t in (mine, theirs)]
    # DESCRIBE_CONFIGS does not imply ALTER_CONFIGS.
    assert config_errors(carl.incremental_alter_configs(alter)) == {mine: denied, theirs: denied}
    allow(authz, ResourceType.TOPIC, mine, "carl", AclOperation.ALTER_CONFIGS)
    assert config_errors(carl.incremental_alter_configs(alter)) == {mine: None, theirs: denied}
    described = carl.describe_configs([topics[0]])[topics[0]].result(timeout=30)
    assert described["retention.ms"].value == "3600000"
    drop_all(authz, "carl")


def test_prefixed_grants_and_deny_overrides_allow(authz):
    create_topic(authz, "team-a.orders")
    create_topic(authz, "team-a.secret")
    carl = sasl_conf(authz, "SCRAM-SHA-512", "carl", USERS["carl"])
    allow(authz, ResourceType.TOPIC, "team-a.", "carl", AclOperation.ALL,
          pattern=ResourcePatternType.PREFIXED)
    assert produce_error(carl, "team-a.orders") is None
    assert produce_error(carl, "team-a.secret") is None
    allow(authz, ResourceType.TOPIC, "team-a.secret", "carl", AclOperation.WRITE,
          perm=AclPermissionType.DENY)
    err = produce_error(carl, "team-a.secret")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert produce_error(carl, "team-a.orders") is None
    # The DENY is for WRITE only: carl still sees the topic.
    assert {"team-a.orders", "team-a.secret"} <= visible_topics(carl)
    drop_all(authz, "carl")


def test_super_user_needs_no_acl(authz):
    alice = sasl_conf(authz, "SCRAM-SHA-512", "alice", USERS["alice"])
    topic = f"alice-{uuid.uuid4().hex[:6]}"
    assert create_error(alice, topic) is None
    assert produce_error(alice, topic) is None
    assert consume_error(alice, topic, "alice-group") is None


def test_java_client_gets_topic_authorization_exception(authz, tmp_path):
    create_topic(authz, "java-denied")
    # SaslClient awaits each send: the first one fails, and the exception ends it.
    out = subprocess.run(java_cmd(tmp_path, "SaslClient", f"127.0.0.1:{authz.ports['SASL_SSL']}",
                                  "java-denied", str(authz.pki.ca), "SCRAM-SHA-256", "bob",
                                  USERS["bob"], "1"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode != 0, out
    assert "org.apache.kafka.common.errors.TopicAuthorizationException" in out.stderr, out


def test_allow_everyone_if_no_acl_found_and_restart(tmp_path):
    b = start_secure(tmp_path, **ACL_ENV, STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND="true")
    try:
        bob = sasl_conf(b, "SCRAM-SHA-256", "bob", USERS["bob"])
        create_topic(b, "open")
        create_topic(b, "guarded")
        # No ACL exists for `open`: everyone may write it.
        assert produce_error(bob, "open") is None
        # An ACL for someone else on `guarded`: bob is refused.
        allow(b, ResourceType.TOPIC, "guarded", "carl", AclOperation.WRITE)
        err = produce_error(bob, "guarded")
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
        # The ACLs are in the metadata quorum: kept over a restart, and with
        # allow_everyone_if_no_acl_found off `open` is refused too.
        b.stop()
        b.env["STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] = "false"
        b.start()
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
        a = admin(b)
        kept = a.describe_acls(flt).result(timeout=30)
        assert [(a.name, a.principal) for a in kept] == [("guarded", "User:carl")], kept
        err = produce_error(bob, "open")
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    finally:
        b.kill()


def test_acls_are_seen_on_every_broker_of_a_cluster(tmp_path):
    """Three brokers with the authorizer on: an ACL created through one broker is
    enforced by every other (the metadata quorum carries it). The inter-broker
    listener's principal is a super user, so transaction markers between brokers
    (CLUSTER_ACTION) keep working: a transactional SCRAM producer commits."""
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
            **ACL_ENV,
        })
    try:
        c.start()
        a = AdminClient({"bootstrap.servers": c.nodes[1].bootstrap})
        up = UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"erin-secret")
        for f in a.alter_user_scram_credentials([up]).values():
            f.result(timeout=30)
        for f in a.create_topics([NewTopic("shared", 3, 3)]).values():
            f.result(timeout=30)

        def conf(via, **extra):
            return {"bootstrap.servers": f"{c.nodes[via].host}:{sasl_ports[via]}",
                    "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                    "sasl.username": "erin", "sasl.password": "erin-secret",
                    "ssl.ca.location": str(pki.ca), **extra}
        for via in (2, 3):
            err = produce_error(conf(via), "shared")
            assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
        for b in (AclBinding(ResourceType.TOPIC, "shared", ResourcePatternType.LITERAL, "User:erin",
                             "*", AclOperation.WRITE, AclPermissionType.ALLOW),
                  AclBinding(ResourceType.TRANSACTIONAL_ID, "erin-", ResourcePatternType.PREFIXED,
                             "User:erin", "*", AclOperation.WRITE, AclPermissionType.ALLOW)):
            for f in a.create_acls([b]).values():
                f.result(timeout=30)
        for via in (2, 3):
            deadline = time.time() + 30
            while produce_error(conf(via), "shared") is not None and time.time() < deadline:
                time.sleep(0.5)
            assert produce_error(conf(via), "shared") is None
        # A transaction over three partitions led by three brokers: the
        # coordinator's markers go to the other brokers as the super user.
        p = Producer(conf(2, **{"transactional.id": "erin-1"}))
        p.init_transactions(30)
        p.begin_transaction()
        for part in range(3):
            p.produce("shared", value=b"t", partition=part)
        p.commit_transaction(30)
        # Without WRITE on the transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
        q = Producer(conf(3, **{"transactional.id": "other-1"}))
        with pytest.raises(KafkaException) as e:
            q.init_transactions(30)
        assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value
    finally:
        c.stop_all()
