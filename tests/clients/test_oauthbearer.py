"""SASL OAUTHBEARER with real clients over SASL_SSL: confluent-kafka (librdkafka) with
an `oauth_cb` handing it RS256 JWTs signed by the `openssl` CLI, and the clients' own
OIDC logins (librdkafka's `sasl.oauthbearer.method=oidc` in confluent-kafka and kcat
(on the wheel's librdkafka, see oidc_librdkafka),
Kafka's Java OAuthBearerLoginCallbackHandler) fetching tokens from a client_credentials
token endpoint; the broker checks the tokens against a JWKS served over HTTP on
127.0.0.1. Good tokens produce and consume; expired, wrongly issued, wrong-audience,
badly signed and unknown-key tokens fail authentication cleanly (logged without the
token, counted) while other clients are served; a key added to the JWKS is picked up
without a restart."""
import base64
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, Producer

from test_security import Pki, log_text, metric, roundtrip, start_secure
from test_txn_tools import java_cmd

ISSUER = "https://idp.test"
AUDIENCE = "strata"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Key:
    """An RSA key made and used by the openssl CLI."""

    def __init__(self, d, kid):
        self.kid = kid
        self.path = Path(d) / f"{kid}.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", str(self.path)],
                       check=True, capture_output=True, timeout=60)
        out = subprocess.run(["openssl", "rsa", "-in", str(self.path), "-noout", "-modulus"],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        modulus = bytes.fromhex(out.strip().split("=", 1)[1])
        self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64url(modulus), "e": b64url((65537).to_bytes(3, "big"))}

    def sign(self, claims, kid=None):
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}).encode())
        payload = b64url(json.dumps(claims).encode())
        signed = f"{header}.{payload}".encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.path)],
                             input=signed, check=True, capture_output=True, timeout=60).stdout
        return f"{header}.{payload}.{b64url(sig)}"


class Jwks:
    """A small identity provider on 127.0.0.1 (http.server): the JWKS document at
    /jwks.json (`keys` can change), and an OAuth 2 token endpoint at /token for the
    client_credentials grant (RFC 6749 4.4), as Kafka's and librdkafka's OIDC login
    use it: the client id and secret in HTTP Basic (or the form), answered with a JWT
    whose subject is the client id, signed by the first key."""

    def __init__(self, keys, tls=None):
        self.keys = list(keys)
        self.gets = 0
        # client id -> secret
        self.clients = {}
        self.issued = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                outer.gets += 1
                self.reply(200, {"keys": [k.jwk for k in outer.keys]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                cid, secret = (form.get("client_id", [None])[0], form.get("client_secret", [None])[0])
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    raw = base64.b64decode(auth[6:]).decode()
                    cid, secret = (urllib.parse.unquote(x) for x in raw.split(":", 1))
                if form.get("grant_type") != ["client_credentials"]:
                    return self.reply(400, {"error": "unsupported_grant_type"})
                if cid not in outer.clients or outer.clients[cid] != secret:
                    return self.reply(401, {"error": "invalid_client"})
                token = outer.keys[0].sign(claims(sub=cid))
                outer.issued.append(cid)
                self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            # `tls`: (certificate, key) files; the server then speaks https only.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "https" if tls else "http"
        base = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{base}/jwks.json"
        self.token_url = f"{base}/token"

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    d = tmp_path_factory.mktemp("oauth")
    k1, k2, rogue = Key(d, "k1"), Key(d, "k2"), Key(d, "rogue")
    jwks = Jwks([k1])
    b = start_secure(d / "broker", **{
        "STRATA_SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-512,OAUTHBEARER",
        "STRATA_SASL_OAUTHBEARER_JWKS_ENDPOINT_URL": jwks.url,
        "STRATA_SASL_OAUTHBEARER_EXPECTED_ISSUER": ISSUER,
        "STRATA_SASL_OAUTHBEARER_EXPECTED_AUDIENCE": f"other,{AUDIENCE}",
    })
    yield b, jwks, k1, k2, rogue
    b.kill()
    jwks.close()


def claims(sub="svc-orders", **over):
    now = int(time.time())
    c = {"sub": sub, "iss": ISSUER, "aud": [AUDIENCE], "iat": now - 5, "exp": now + 300}
    c.update(over)
    return c


def oauth_conf(b, token, **extra):
    def cb(_config):
        return token, time.time() + 300
    return {"bootstrap.servers": f"127.0.0.1:{b.ports['SASL_SSL']}",
            "security.protocol": "SASL_SSL", "sasl.mechanisms": "OAUTHBEARER",
            "ssl.ca.location": str(b.pki.ca), "oauth_cb": cb, **extra}


def authentication_error(b, token, timeout=30):
    """The error librdkafka reports for a producer with `token`, or None."""
    errors = []
    p = Producer(oauth_conf(b, token, error_cb=errors.append, **{"message.timeout.ms": 5000}))
    p.produce(f"oauth-refused-{uuid.uuid4().hex[:6]}", value=b"x")
    deadline = time.time() + timeout
    while time.time() < deadline and not any(
            e.code() == KafkaError._AUTHENTICATION for e in errors):
        p.poll(0.2)
    p.flush(10)
    return next((e for e in errors if e.code() == KafkaError._AUTHENTICATION), None)


def test_a_signed_token_produces_and_consumes(idp):
    b, _, k1, _, _ = idp
    token = k1.sign(claims())
    roundtrip(oauth_conf(b, token), f"oauth-{uuid.uuid4().hex[:6]}")
    assert "principal=User:svc-orders" in log_text(b)
    assert token not in log_text(b), "the token is never logged"


@pytest.mark.parametrize("case", ["expired", "issuer", "audience", "signature", "unknown key",
                                  "no exp"])
def test_bad_tokens_fail_authentication_cleanly(idp, case):
    b, _, k1, _, rogue = idp
    now = int(time.time())
    token = {
        "expired": lambda: k1.sign(claims(exp=now - 120, iat=now - 600)),
        "issuer": lambda: k1.sign(claims(iss="https://evil.test")),
        "audience": lambda: k1.sign(claims(aud="elsewhere")),
        "signature": lambda: rogue.sign(claims(), kid="k1"),
        "unknown key": lambda: rogue.sign(claims()),
        "no exp": lambda: k1.sign({k: v for k, v in claims().items() if k != "exp"}),
    }[case]()
    reason = {"expired": "the token expired", "issuer": "issuer is not the expected",
              "audience": "not for an expected audience", "signature": "signature does not verify",
              "unknown key": "no key", "no exp": "the token has no exp"}[case]
    before = metric(b, "strata_authentication_failures")
    err = authentication_error(b, token)
    assert err is not None, f"{case}: the client saw an authentication failure"
    assert metric(b, "strata_authentication_failures") > before
    assert 'mechanism="OAUTHBEARER"' in b.metrics()
    assert reason in log_text(b), f"{case}: the reason is logged"
    assert token not in log_text(b)
    # The broker serves everyone else.
    roundtrip(oauth_conf(b, k1.sign(claims())), f"oauth-after-{uuid.uuid4().hex[:6]}", n=3)


def test_a_key_added_to_the_jwks_is_used_without_a_restart(idp):
    b, jwks, k1, k2, _ = idp
    token = k2.sign(claims(sub="svc-new"))
    jwks.keys = [k1, k2]
    gets = jwks.gets
    # The broker reloads the JWKS for a key it does not know (at most once a second).
    time.sleep(1.1)
    roundtrip(oauth_conf(b, token), f"oauth-rotated-{uuid.uuid4().hex[:6]}", n=3)
    assert jwks.gets > gets
    assert "principal=User:svc-new" in log_text(b)


def oidc_conf(b, jwks, client, secret, **extra):
    return {"bootstrap.servers": f"127.0.0.1:{b.ports['SASL_SSL']}",
            "security.protocol": "SASL_SSL", "sasl.mechanisms": "OAUTHBEARER",
            "ssl.ca.location": str(b.pki.ca), "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.id": client, "sasl.oauthbearer.client.secret": secret,
            "sasl.oauthbearer.token.endpoint.url": jwks.token_url, **extra}


def test_librdkafka_oidc_login_fetches_its_token_from_the_endpoint(idp):
    b, jwks, _, _, _ = idp
    jwks.clients["svc-rdkafka"] = "s3cret-rd"
    roundtrip(oidc_conf(b, jwks, "svc-rdkafka", "s3cret-rd"), f"oidc-rd-{uuid.uuid4().hex[:6]}", n=5)
    assert "svc-rdkafka" in jwks.issued
    assert "principal=User:svc-rdkafka" in log_text(b)


def oidc_librdkafka(tmp_path):
    """A directory whose librdkafka.so.1 is the one the confluent-kafka wheel ships.
    Debian's kcat links Debian's librdkafka 2.0.2, built without libcurl, which
    refuses `sasl.oauthbearer.method=oidc`; the wheel's librdkafka (same ABI) has it,
    so kcat runs as itself with that library on LD_LIBRARY_PATH."""
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    [lib] = libs.glob("librdkafka*.so*")
    d = tmp_path / "librdkafka"
    d.mkdir()
    (d / "librdkafka.so.1").symlink_to(lib)
    return d


def test_kcat_oidc_login_produces_and_consumes(idp, tmp_path):
    b, jwks, _, _, _ = idp
    jwks.clients["svc-kcat"] = "s3cret-kcat"
    topic = f"oidc-kcat-{uuid.uuid4().hex[:6]}"
    conf = oidc_conf(b, jwks, "svc-kcat", "s3cret-kcat")
    common = ["kcat", "-b", conf.pop("bootstrap.servers")]
    for k, v in conf.items():
        common += ["-X", f"{k}={v}"]
    env = {**os.environ, "LD_LIBRARY_PATH": str(oidc_librdkafka(tmp_path))}
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True, env=env, timeout=30)
    assert f"librdkafka {confluent_kafka.libversion()[0]}" in version.stdout, version.stdout
    subprocess.run(common + ["-P", "-t", topic], input="one\ntwo\nthree\n", text=True,
                   check=True, timeout=60, env=env)
    out = subprocess.run(common + ["-C", "-t", topic, "-o", "beginning", "-e", "-q"],
                         capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.split() == ["one", "two", "three"], out
    assert "principal=User:svc-kcat" in log_text(b)


def test_java_oauthbearer_login_callback_handler(idp, tmp_path):
    """Kafka's own OIDC login (OAuthBearerLoginCallbackHandler, client_credentials)
    in the Java producer and consumer."""
    b, jwks, _, _, _ = idp
    jwks.clients["svc-java"] = "s3cret-java"
    topic = f"oidc-java-{uuid.uuid4().hex[:6]}"
    cmd = java_cmd(tmp_path, "SaslClient", f"127.0.0.1:{b.ports['SASL_SSL']}", topic, str(b.pki.ca),
                   "OAUTHBEARER", "svc-java", "s3cret-java", "2")
    # Kafka 4 calls only the URLs a JVM allows.
    cmd[1:1] = [f"-Dstrata.token.endpoint={jwks.token_url}",
                f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks.token_url}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr[-3000:]}"
    produced = int(out.stdout.split("PRODUCED ")[1].split()[0])
    assert produced >= 5 and f"CONSUMED {produced}" in out.stdout, out.stdout
    assert "svc-java" in jwks.issued
    assert "principal=User:svc-java" in log_text(b)


def test_a_jwks_served_over_https_is_verified_against_the_configured_ca(tmp_path):
    """The JWKS from an https:// endpoint whose certificate the configured CA
    signed: tokens signed by its key authenticate. A broker trusting another CA
    cannot load it: the login fails, with the TLS error logged."""
    pki = Pki(tmp_path / "idp-pki")
    jwks = Jwks([Key(tmp_path, "k1")], tls=pki.issue("idp", "idp.test", 2001))
    other = Pki(tmp_path / "other-pki")
    brokers = []
    try:
        for name, ca in (("trusting", pki.ca), ("distrusting", other.ca)):
            brokers.append(start_secure(tmp_path / name, **{
                "STRATA_SASL_ENABLED_MECHANISMS": "OAUTHBEARER",
                "STRATA_SASL_OAUTHBEARER_JWKS_ENDPOINT_URL": jwks.url,
                "STRATA_SASL_OAUTHBEARER_JWKS_ENDPOINT_CA_LOCATION": str(ca),
            }))
        good, bad = brokers
        assert jwks.url.startswith("https://")
        token = jwks.keys[0].sign(claims(sub="svc-https"))
        roundtrip(oauth_conf(good, token), f"oauth-https-{uuid.uuid4().hex[:6]}", n=3)
        assert "principal=User:svc-https" in log_text(good)
        assert jwks.gets >= 1
        assert authentication_error(bad, token) is not None
        assert "TLS" in log_text(bad), "the JWKS fetch's TLS failure is logged"
        assert "principal=User:svc-https" not in log_text(bad)
    finally:
        for b in brokers:
            b.kill()
        jwks.close()
