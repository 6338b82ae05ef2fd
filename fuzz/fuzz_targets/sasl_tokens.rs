//! The SASL tokens a client sends before it is authenticated: a PLAIN token, the
//! two SCRAM client messages and the OAUTHBEARER client message (and the JWT in
//! it, checked against an empty key set and a one-key set) must turn any bytes
//! into an answer or an authentication failure, never a panic. (The SaslHandshake and SaslAuthenticate
//! frames around them are decoded by `decode_frame`, which `request_frame` covers.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::security::oauth::{self, Expectations};
use strata_broker::security::sasl::parse_plain;
use strata_broker::security::scram::{ScramCredential, ScramMechanism, ScramServer};

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    let expect = Expectations {
        issuer: Some("i".into()),
        audiences: vec!["a".into()],
        sub_claim: "sub".into(),
        skew: std::time::Duration::from_secs(30),
    };
    let keys = oauth::parse_jwks(br#"{"keys":[{"kty":"RSA","kid":"","n":"AQAB","e":"AQAB"}]}"#)
        .unwrap_or_default();
    let jwt = oauth::parse_client_message(data).ok().or(std::str::from_utf8(data).ok());
    if let Some(jwt) = jwt {
        let _ = oauth::key_id(jwt);
        let _ = oauth::verify(jwt, &keys, &expect, std::time::SystemTime::now());
        let _ = oauth::verify(jwt, &Default::default(), &expect, std::time::SystemTime::now());
    }
    let _ = oauth::parse_jwks(data);
    // The first byte says where the client-first message ends.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (first, last) = rest.split_at(usize::from(cut).min(rest.len()));
    for mech in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let cred = ScramCredential::from_salted_password(mech, b"salt", 4096, &[7; 64][..mech.key_len()]);
        if let Ok((server, _)) = ScramServer::client_first(mech, first, "servernonce", |_| Some(cred)) {
            let _ = server.client_final(last);
        }
    }
});
