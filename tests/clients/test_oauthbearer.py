"""SASL OAUTHBEARER with a real client: confluent-kafka (librdkafka) over SASL_SSL with
an `oauth_cb` handing it RS256 JWTs signed by the `openssl` CLI; the broker checks them
against a JWKS served over HTTP on 127.0.0.1. Good tokens produce and consume;
expired, wrongly issued, wrong-audience, badly signed and unknown-key tokens fail
authentication cleanly (logged without the token, counted) while other clients are
served; a key added to the JWKS is picked up without a restart."""
import base64
import http.server
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer

from test_security import log_text, metric, roundtrip, start_secure

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
    """A JWKS document served by http.server on 127.0.0.1; `keys` can change."""

    def __init__(self, keys):
        self.keys = list(keys)
        self.gets = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.gets += 1
                body = json.dumps({"keys": [k.jwk for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

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
