//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the stored credential and
//! the server side of the exchange, as pure functions over bytes.
//!
//! What is stored (in the metadata quorum) is what RFC 5802 calls the server's
//! verifier: salt, iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client
//! Key"))` and `ServerKey = HMAC(SaltedPassword, "Server Key")`. Neither the
//! password nor the salted password is kept: `AlterUserScramCredentials` brings
//! the salted password (the client computes it), the broker derives the two keys
//! and forgets it. A stolen store does not let anyone authenticate: the client
//! proof needs `ClientKey`, which `StoredKey` is a one-way hash of.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Iteration counts accepted for a credential (Kafka's bounds).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// The mechanism with this Kafka wire code (1 and 2).
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    /// Length of a key / salted password (the hash's output).
    pub fn key_len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    /// `Hi(password, salt, iterations)` of RFC 5802 (PBKDF2).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let alg = match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = vec![0u8; self.key_len()];
        pbkdf2::derive(alg, iterations, salt, password, &mut out);
        out
    }
}

/// The server's verifier of one user and mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The verifier of a salted password (what `AlterUserScramCredentials` sends).
    pub fn from_salted_password(
        mech: ScramMechanism,
        salt: &[u8],
        iterations: i32,
        salted: &[u8],
    ) -> Self {
        let client_key = mech.mac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: digest::digest(mech.digest(), &client_key).as_ref().to_vec(),
            server_key: mech.mac(salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this verifier was made from (SASL/PLAIN).
    pub fn verify_password(&self, mech: ScramMechanism, password: &[u8]) -> bool {
        let Some(iterations) = u32::try_from(self.iterations)
            .ok()
            .and_then(NonZeroU32::new)
        else {
            return false;
        };
        let salted = mech.salted_password(password, &self.salt, iterations);
        let candidate =
            ScramCredential::from_salted_password(mech, &self.salt, self.iterations, &salted);
        constant_time::verify_slices_are_equal(&candidate.stored_key, &self.stored_key).is_ok()
    }
}

/// Every user's SCRAM credentials, by user then mechanism.
pub type UserCredentials = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

/// Why an exchange failed. The client only ever learns that authentication
/// failed; this is for the broker's log (it never holds a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, ScramError> {
    Err(ScramError(why.into()))
}

/// A `saslname` of RFC 5802 back to a username (`=2C` is `,`, `=3D` is `=`).
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return err("badly escaped username"),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The server after the client-first message, waiting for the client-final one.
#[derive(Debug)]
pub struct ScramServer {
    mech: ScramMechanism,
    username: String,
    credential: ScramCredential,
    nonce: String,
    gs2_header: String,
    /// client-first-message-bare "," server-first-message
    auth_prefix: String,
}

impl ScramServer {
    /// Reads the client-first message and answers the server-first one.
    /// `server_nonce` must be fresh random printable characters; `lookup` finds the
    /// user's credential.
    pub fn client_first(
        mech: ScramMechanism,
        msg: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let msg = std::str::from_utf8(msg).or_else(|_| err("client-first message is not UTF-8"))?;
        // gs2-header: "n,," / "y,," / with "a=authzid"; channel binding is not offered.
        let mut parts = msg.splitn(3, ',');
        let (Some(cb), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return err("client-first message has no GS2 header");
        };
        if cb != "n" && cb != "y" {
            return err("channel binding is not supported");
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(unescape_name(v)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v);
            } else if attr.starts_with("m=") {
                return err("mandatory extensions are not supported");
            } else if attr == "tokenauth=true" {
                return err("delegation tokens are not supported");
            }
        }
        let (Some(username), Some(client_nonce)) = (user, client_nonce) else {
            return err("client-first message lacks the username or the nonce");
        };
        if client_nonce.is_empty() || username.is_empty() {
            return err("empty username or nonce");
        }
        if let Some(a) = authz.strip_prefix("a=") {
            if unescape_name(a)? != username {
                return err("authorization id differs from the username");
            }
        }
        let Some(credential) = lookup(&username) else {
            return err(format!("no {} credential for user {username}", mech.name()));
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let auth_prefix = format!("{bare},{server_first}");
        let gs2_header = format!("{cb},{authz},");
        Ok((
            ScramServer {
                mech,
                username,
                credential,
                nonce,
                gs2_header,
                auth_prefix,
            },
            server_first.into_bytes(),
        ))
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mech
    }

    /// Checks the client-final message's proof; on success the username and the
    /// server-final message (the server's signature).
    pub fn client_final(self, msg: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let msg = std::str::from_utf8(msg).or_else(|_| err("client-final message is not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError("client-final message has no proof".into()))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let binding = binding
            .and_then(|b| B64.decode(b).ok())
            .ok_or_else(|| ScramError("bad channel binding".into()))?;
        if binding != self.gs2_header.as_bytes() {
            return err("channel binding does not match the GS2 header");
        }
        // Kafka accepts a nonce that ends with the combined one (librdkafka 2.0
        // repeats the client's part in front); the server's fresh part is in it
        // either way, so a replayed exchange still fails.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return err("nonce does not match");
        }
        let proof = B64.decode(proof).or_else(|_| err("proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let signature = self
            .mech
            .mac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return err(format!("invalid credentials for user {}", self.username));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = digest::digest(self.mech.digest(), &client_key);
        if constant_time::verify_slices_are_equal(stored.as_ref(), &self.credential.stored_key)
            .is_err()
        {
            return err(format!("invalid credentials for user {}", self.username));
        }
        let server_sig = self
            .mech
            .mac(&self.credential.server_key, auth_message.as_bytes());
        Ok((
            self.username,
            format!("v={}", B64.encode(server_sig)).into_bytes(),
        ))
    }
}

/// A fresh server nonce: 32 random letters and digits (as Kafka's, so that no
/// client meets a character it does not expect).
pub fn server_nonce() -> Result<String, ScramError> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).or_else(|_| err("no randomness for a nonce"))?;
    // 62 letters: the slight bias of `% 62` costs well under a bit of the 190.
    Ok(b.iter()
        .map(|x| ALPHABET[usize::from(*x) % ALPHABET.len()] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_verifies() {
        let mech = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = mech.salted_password(b"pencil", &salt, NonZeroU32::new(4096).unwrap());
        let cred = ScramCredential::from_salted_password(mech, &salt, 4096, &salted);
        let (server, first) = ScramServer::client_first(
            mech,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            |u| (u == "user").then(|| cred.clone()),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (user, last) = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(cred.verify_password(mech, b"pencil"));
        assert!(!cred.verify_password(mech, b"pencil2"));
    }

    #[test]
    fn wrong_proofs_and_malformed_messages_fail() {
        let mech = ScramMechanism::Sha512;
        let salted = mech.salted_password(b"pw", b"salt", NonZeroU32::new(4096).unwrap());
        let cred = ScramCredential::from_salted_password(mech, b"salt", 4096, &salted);
        let start = || {
            ScramServer::client_first(mech, b"n,,n=a=3Db,r=abc", "xyz", |u| {
                (u == "a=b").then(|| cred.clone())
            })
            .unwrap()
            .0
        };
        assert!(start()
            .client_final(b"c=biws,r=abcxyz,p=AAAA")
            .unwrap_err()
            .0
            .contains("invalid credentials"));
        assert!(start().client_final(b"c=biws,r=other,p=AAAA").is_err());
        assert!(start().client_final(b"c=eSws,r=abcxyz,p=AAAA").is_err());
        assert!(start().client_final(b"garbage").is_err());
        assert!(start().client_final(&[0xff, 0xfe]).is_err());
        for bad in [
            &b"p=tls-unique,,n=a,r=x"[..],
            b"n,,r=x",
            b"n,,n=a",
            b"n,,n=a=4,r=x",
            b"n,a=other,n=a=3Db,r=x",
            b"n,,n=nobody,r=x",
            b"",
        ] {
            assert!(
                ScramServer::client_first(mech, bad, "s", |u| (u == "a=b").then(|| cred.clone()))
                    .is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        /// Any bytes as either message: an answer or an error, never a panic.
        #[test]
        fn arbitrary_messages_never_panic(first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let cred = ScramCredential::from_salted_password(ScramMechanism::Sha256, b"s", 4096, &[1; 32]);
            let mut msg = b"n,,n=u,r=".to_vec();
            msg.extend_from_slice(&first);
            for m in [&first[..], &msg[..]] {
                if let Ok((server, _)) = ScramServer::client_first(ScramMechanism::Sha256, m, "n", |_| Some(cred.clone())) {
                    let _ = server.client_final(&last);
                }
            }
        }
    }

    #[test]
    fn credentials_keep_no_secret_and_nonces_are_fresh() {
        let mech = ScramMechanism::Sha256;
        let salted = mech.salted_password(b"secret", b"s", NonZeroU32::new(4096).unwrap());
        let cred = ScramCredential::from_salted_password(mech, b"s", 4096, &salted);
        let json = serde_json::to_string(&cred).unwrap();
        assert!(!json.contains(&format!("{:?}", salted)));
        assert_ne!(cred.stored_key, salted);
        assert_ne!(server_nonce().unwrap(), server_nonce().unwrap());
    }
}
