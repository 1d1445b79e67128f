//! Account SAS tokens signed with the account key, renewed before they expire.
//!
//! The key itself never leaves the process: every request carries a token that allows
//! only blob operations (read, write, delete, create) for a limited time. A token is
//! signed when first needed and again once a quarter of its lifetime is left, so a
//! request (with its retries) never starts with a token about to lapse.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use azure_core::time::OffsetDateTime;

/// The SAS version signed; its string-to-sign includes the encryption scope.
const SAS_VERSION: &str = "2022-11-02";
/// Blob service only.
const SERVICES: &str = "b";
/// Service, container and object level operations (container creation included).
const RESOURCE_TYPES: &str = "sco";
/// Read, write, delete, create.
const PERMISSIONS: &str = "rwdc";
/// How far back the start time is set, to absorb clock skew with the service.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What one token is signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SasFields {
    /// Start, `YYYY-MM-DDTHH:MM:SSZ`.
    pub(crate) start: String,
    /// Expiry, `YYYY-MM-DDTHH:MM:SSZ`.
    pub(crate) expiry: String,
    /// `https`, or `https,http` for a plain-HTTP endpoint (an emulator).
    pub(crate) protocol: &'static str,
}

/// The text an account SAS signature covers.
pub(crate) fn string_to_sign(account: &str, fields: &SasFields) -> String {
    // Account, permissions, services, resource types, start, expiry, IP range, protocol,
    // version, encryption scope, and a final empty line.
    [
        account,
        PERMISSIONS,
        SERVICES,
        RESOURCE_TYPES,
        &fields.start,
        &fields.expiry,
        "",
        fields.protocol,
        SAS_VERSION,
        "",
        "",
    ]
    .join("\n")
}

/// The token's query parameters, signature last.
pub(crate) fn sign(
    account: &str,
    key: &Secret,
    fields: &SasFields,
) -> azure_core::Result<Vec<(String, String)>> {
    let signature = azure_core::hmac::hmac_sha256(&string_to_sign(account, fields), key)?;
    let pairs = [
        ("sv", SAS_VERSION),
        ("ss", SERVICES),
        ("srt", RESOURCE_TYPES),
        ("sp", PERMISSIONS),
        ("st", &fields.start),
        ("se", &fields.expiry),
        ("spr", fields.protocol),
        ("sig", &signature),
    ];
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// A UTC time as the SAS format wants it, to the second.
pub(crate) fn sas_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

struct Signed {
    pairs: Vec<(String, String)>,
    renew_at: Instant,
}

/// Signs account SAS tokens and hands out the current one.
pub(crate) struct AccountSasSigner {
    account: String,
    key: Secret,
    lifetime: Duration,
    protocol: &'static str,
    current: Mutex<Option<Signed>>,
}

impl std::fmt::Debug for AccountSasSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSasSigner")
            .field("account", &self.account)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl AccountSasSigner {
    /// A signer for `account`; `plain_http` allows the token over HTTP (emulators).
    pub(crate) fn new(account: &str, key: Secret, lifetime: Duration, plain_http: bool) -> Self {
        Self {
            account: account.to_owned(),
            key,
            lifetime,
            protocol: if plain_http { "https,http" } else { "https" },
            current: Mutex::new(None),
        }
    }

    /// The current token's query parameters, signing a new token if the current one has
    /// less than a quarter of its lifetime left.
    pub(crate) fn token(&self) -> azure_core::Result<Vec<(String, String)>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signed) = current.as_ref().filter(|s| Instant::now() < s.renew_at) {
            return Ok(signed.pairs.clone());
        }
        let fields = self.fields_from(OffsetDateTime::now_utc());
        let pairs = sign(&self.account, &self.key, &fields)?;
        let renew_at = Instant::now() + self.lifetime.mul_f64(0.75);
        let (account, expiry) = (&self.account, &fields.expiry);
        tracing::debug!(account, expiry, "signed a new account SAS");
        *current = Some(Signed {
            pairs: pairs.clone(),
            renew_at,
        });
        Ok(pairs)
    }

    fn fields_from(&self, now: OffsetDateTime) -> SasFields {
        SasFields {
            start: sas_time(now - CLOCK_SKEW),
            expiry: sas_time(now + self.lifetime),
            protocol: self.protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SasFields {
        SasFields {
            start: "2024-01-02T03:04:05Z".into(),
            expiry: "2024-01-02T04:04:05Z".into(),
            protocol: "https,http",
        }
    }

    #[test]
    fn string_to_sign_has_every_field_in_order() {
        let s = string_to_sign("acct", &fields());
        assert_eq!(
            s,
            "acct\nrwdc\nb\nsco\n2024-01-02T03:04:05Z\n2024-01-02T04:04:05Z\n\nhttps,http\n\
             2022-11-02\n\n"
        );
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // Computed separately: base64(HMAC-SHA256(base64decode(key), string_to_sign)).
        let key = Secret::new("a2V5LWZvci10ZXN0cw==");
        let pairs = sign("acct", &key, &fields()).unwrap();
        let sig = pairs
            .iter()
            .find(|(k, _)| k == "sig")
            .map(|(_, v)| v.as_str());
        assert_eq!(sig, Some("/KkAziAPTZMknbL7GS8hOa3VJjILUxY5/UZSmBFKEGk="));
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["sv", "ss", "srt", "sp", "st", "se", "spr", "sig"]);
    }

    #[test]
    fn times_are_utc_to_the_second() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(sas_time(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn tokens_are_reused_until_renewal_is_due() {
        let signer = AccountSasSigner::new("acct", Secret::new("a2V5"), Duration::ZERO, false);
        let first = signer.token().unwrap();
        assert!(first.iter().any(|(k, v)| k == "spr" && v == "https"));
        let long =
            AccountSasSigner::new("acct", Secret::new("a2V5"), Duration::from_secs(3600), true);
        let a = long.token().unwrap();
        assert_eq!(a, long.token().unwrap());
        assert!(a.iter().any(|(k, v)| k == "spr" && v == "https,http"));
    }
}
