//! The SASL tokens a client sends before it is authenticated: a PLAIN token and
//! the two SCRAM client messages must turn any bytes into an answer or an
//! authentication failure, never a panic. (The SaslHandshake and SaslAuthenticate
//! frames around them are decoded by `decode_frame`, which `request_frame` covers.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::security::sasl::parse_plain;
use strata_broker::security::scram::{ScramCredential, ScramMechanism, ScramServer};

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
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
