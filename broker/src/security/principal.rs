//! Who a connection is: the principal (`User:name`) the per-request context carries
//! to the handlers. Plaintext and SSL-without-a-client-certificate connections are
//! `User:ANONYMOUS`; SASL connections are the authenticated username; SSL
//! connections with a client certificate are its subject, rewritten by Kafka's
//! `ssl.principal.mapping.rules` (`ssl_principal_mapping_rules`):
//!
//! * the subject is written as RFC 2253 does (`CN=alice,OU=eng,O=acme`: most
//!   specific attribute first, no spaces after commas, special characters escaped);
//! * the rules are tried in order, comma-separated: `RULE:pattern/replacement/`
//!   rewrites a subject the regular expression `pattern` matches in full into
//!   `replacement` (`$1` … are the groups), optionally lower-cased (`/L`) or
//!   upper-cased (`/U`); `DEFAULT` keeps the whole subject;
//! * a subject no rule matches is refused (the TLS connection is closed).

use std::fmt;

use regex::Regex;

/// An authenticated identity, as Kafka writes it (`User:alice`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Kafka's principal type; always `User` here.
    pub kind: &'static str,
    /// Shared: every request of the connection carries it (quotas go by it).
    pub name: std::sync::Arc<str>,
}

impl Principal {
    pub fn user(name: impl AsRef<str>) -> Self {
        Principal {
            kind: "User",
            name: std::sync::Arc::from(name.as_ref()),
        }
    }

    /// The principal of a connection that did not authenticate.
    pub fn anonymous() -> Self {
        Principal::user("ANONYMOUS")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Rewrite {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Parsed `ssl_principal_mapping_rules`.
#[derive(Debug, Clone)]
pub struct MappingRules(Vec<Rule>);

impl MappingRules {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule `{rest}`: no `/` after the pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule `{rest}`: no `/` after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern `{pattern}`: {e}"))?;
                rules.push(Rule::Rewrite {
                    pattern,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(format!("`{rest}` is neither RULE:... nor DEFAULT"));
            }
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.is_empty() {
                return Err(format!("expected `,` before `{rest}`"));
            }
        }
        if rules.is_empty() {
            return Err("no rule (use DEFAULT)".into());
        }
        Ok(MappingRules(rules))
    }

    /// The principal of a (verified) DER client certificate, and its subject; an
    /// error when no rule matches the subject.
    pub fn certificate_principal(&self, der: &[u8]) -> Result<(Principal, String), String> {
        let subject = certificate_subject(der)?;
        let name = self.apply(&subject).ok_or_else(|| {
            format!("no ssl_principal_mapping_rules rule matches the client certificate subject {subject}")
        })?;
        Ok((Principal::user(name), subject))
    }

    /// The principal name of a certificate with this (RFC 2253) subject, if a rule
    /// matches it.
    pub fn apply(&self, subject: &str) -> Option<String> {
        for rule in &self.0 {
            match rule {
                Rule::Default => return Some(subject.to_string()),
                Rule::Rewrite {
                    pattern,
                    replacement,
                    case,
                } => {
                    let Some(caps) = pattern.captures(subject) else {
                        continue;
                    };
                    let mut out = String::new();
                    caps.expand(replacement, &mut out);
                    return Some(match case {
                        Some('L') => out.to_lowercase(),
                        Some('U') => out.to_uppercase(),
                        _ => out,
                    });
                }
            }
        }
        None
    }
}

/// Text up to the next `/` not escaped by a backslash (`\/` stands for `/`), and
/// what follows it.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if s[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The subject of a DER certificate, written as RFC 2253 (and Java's
/// `X500Principal.getName()`) does.
pub fn certificate_subject(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.3" => "CN".to_string(),
                "2.5.4.6" => "C".to_string(),
                "2.5.4.7" => "L".to_string(),
                "2.5.4.8" => "ST".to_string(),
                "2.5.4.9" => "STREET".to_string(),
                "2.5.4.10" => "O".to_string(),
                "2.5.4.11" => "OU".to_string(),
                "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                other => other.to_string(),
            };
            let value = atv
                .as_str()
                .map_err(|e| format!("client certificate subject attribute {key}: {e}"))?;
            parts.push(format!("{key}={}", escape(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_rewrite_subjects_as_kafka_documents() {
        let rules = MappingRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=([^,]*),O=(.*)$/$1@$2/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules
                .apply("CN=kafka-app,OU=ServiceUsers,O=Acme")
                .as_deref(),
            Some("kafka-app")
        );
        assert_eq!(rules.apply("CN=Bob,O=ACME").as_deref(), Some("bob@acme"));
        assert_eq!(rules.apply("C=US").as_deref(), Some("C=US"));
        let only = MappingRules::parse("RULE:^CN=([^,]*).*$/$1/U").unwrap();
        assert_eq!(only.apply("CN=ann,O=x").as_deref(), Some("ANN"));
        assert_eq!(only.apply("O=x"), None);
        let slash = MappingRules::parse(r"RULE:^CN=(.*)$/svc\/$1/").unwrap();
        assert_eq!(slash.apply("CN=a").as_deref(), Some("svc/a"));
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["", "RULE:^CN=(.*)$", "RULE:(/x/", "DEFAULT DEFAULT", "CN"] {
            assert!(MappingRules::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#1"), "\\#1");
    }

    #[test]
    fn principals_print_as_kafka_does() {
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        assert_eq!(Principal::user("alice").to_string(), "User:alice");
    }
}
