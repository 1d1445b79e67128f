//! Where the store lives and how it authenticates.
//!
//! A store is named by a URL, `azure://ACCOUNT/CONTAINER[/PREFIX]`; the endpoint and the
//! credential are options beside it, never part of it, so the URL can be logged and shown
//! in status output without exposing a secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{Secret, TokenCredential};
use url::Url;

use crate::error::ConfigError;

/// The URL scheme of an Azure store.
pub const URL_SCHEME: &str = "azure";

/// The account every Azurite instance serves.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// Azurite's account key. It is published with the emulator and grants nothing elsewhere.
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's default blob endpoint, with the account as the first path segment.
pub const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How the store proves who it is.
///
/// `Debug` names the kind of credential only, never a key, SAS or token.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credential {
    /// Entra ID from the environment: workload identity when `AZURE_FEDERATED_TOKEN_FILE`
    /// is set (Kubernetes), managed identity otherwise. The production default.
    #[default]
    Entra,
    /// A token credential the caller built (any `azure_identity` credential).
    Token(Arc<dyn TokenCredential>),
    /// A shared access signature given by the user, sent as-is with every request.
    Sas(Secret),
    /// The storage account key. The store never sends it: it signs short-lived account
    /// SAS tokens with it and renews them before they expire.
    AccountKey(Secret),
}

impl Credential {
    /// A short name of the credential kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Entra => "entra",
            Self::Token(_) => "token",
            Self::Sas(_) => "sas",
            Self::AccountKey(_) => "account-key",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entra => f.write_str("Entra"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Sas(_) => f.write_str("Sas(<redacted>)"),
            Self::AccountKey(_) => f.write_str("AccountKey(<redacted>)"),
        }
    }
}

/// How failed requests are retried: 429, 5xx, connection failures and timeouts, with
/// exponential backoff capped at `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per operation, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the first retry; each later one doubles it.
    pub initial_backoff: Duration,
    /// The longest delay between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Everything needed to open an [`AzureStore`](crate::AzureStore).
///
/// `Debug` and `Display` never show a key or SAS.
#[derive(Clone)]
pub struct AzureConfig {
    account: String,
    container: String,
    prefix: String,
    endpoint: Option<Url>,
    credential: Credential,
    retry: RetryConfig,
    request_timeout: Duration,
    sas_lifetime: Duration,
}

/// The shortest lifetime accepted for a self-signed SAS, so renewal stays ahead of use.
const MIN_SAS_LIFETIME: Duration = Duration::from_secs(120);

impl AzureConfig {
    /// A store in `container` of `account`, at the container's root, with the public
    /// Azure endpoint and the Entra ID credential.
    pub fn new(account: &str, container: &str) -> Result<Self, ConfigError> {
        validate_account(account)?;
        validate_container(container)?;
        Ok(Self {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix: String::new(),
            endpoint: None,
            credential: Credential::default(),
            retry: RetryConfig::default(),
            request_timeout: Duration::from_secs(30),
            sas_lifetime: Duration::from_secs(3600),
        })
    }

    /// Parses `azure://ACCOUNT/CONTAINER[/PREFIX]`.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let (scheme, rest) = url.split_once("://").ok_or(ConfigError::NotAStoreUrl)?;
        if !scheme.eq_ignore_ascii_case(URL_SCHEME) {
            return Err(ConfigError::WrongScheme {
                scheme: scheme.to_owned(),
            });
        }
        if rest.contains(['?', '#', '@']) {
            return Err(ConfigError::UnexpectedUrlParts);
        }
        let (account, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
        Self::new(account, container)?.with_prefix(prefix)
    }

    /// A store on an Azurite emulator at `endpoint`, with the emulator's well-known
    /// account and key.
    pub fn emulator(endpoint: &str, container: &str) -> Result<Self, ConfigError> {
        Self::new(EMULATOR_ACCOUNT, container)?.with_emulator(Some(endpoint))
    }

    /// Switches to an Azurite emulator: its well-known key, and `endpoint` or, without
    /// one, `http://127.0.0.1:10000/ACCOUNT`.
    pub fn with_emulator(self, endpoint: Option<&str>) -> Result<Self, ConfigError> {
        let default = format!("http://127.0.0.1:10000/{}", self.account);
        self.with_endpoint(endpoint.unwrap_or(&default))?
            .with_account_key(EMULATOR_KEY)
    }

    /// Keeps every document under `prefix` (`a/b`; slashes at either end are ignored).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, ConfigError> {
        self.prefix = normalize_prefix(prefix)?;
        Ok(self)
    }

    /// Talks to `endpoint` (the blob service URL, e.g. an emulator's
    /// `http://127.0.0.1:10000/devstoreaccount1`) instead of
    /// `https://ACCOUNT.blob.core.windows.net`.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, ConfigError> {
        self.endpoint = Some(parse_endpoint(endpoint)?);
        Ok(self)
    }

    /// Authenticates with the account key (base64), signing short-lived SAS tokens.
    pub fn with_account_key(mut self, key: &str) -> Result<Self, ConfigError> {
        let key = key.trim();
        match azure_core::base64::decode(key) {
            Ok(bytes) if !bytes.is_empty() => {}
            _ => return Err(ConfigError::InvalidAccountKey),
        }
        self.credential = Credential::AccountKey(Secret::new(key.to_owned()));
        Ok(self)
    }

    /// Authenticates with a SAS token (the query string, with or without a leading `?`).
    pub fn with_sas(mut self, sas: &str) -> Result<Self, ConfigError> {
        let sas = sas.trim().trim_start_matches('?');
        if !sas
            .split('&')
            .any(|pair| pair.starts_with("sig=") && pair.len() > 4)
        {
            return Err(ConfigError::InvalidSas);
        }
        self.credential = Credential::Sas(Secret::new(sas.to_owned()));
        Ok(self)
    }

    /// Authenticates with a token credential the caller built.
    pub fn with_token_credential(self, credential: Arc<dyn TokenCredential>) -> Self {
        self.with_credential(Credential::Token(credential))
    }

    /// Sets the credential.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = credential;
        self
    }

    /// Sets how failed requests are retried.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = RetryConfig {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// Sets how long one request (sending the body and reading the answer) may take.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a self-signed SAS is valid (at least two minutes); it is renewed
    /// when a quarter of that is left.
    pub fn with_sas_lifetime(mut self, lifetime: Duration) -> Result<Self, ConfigError> {
        if lifetime < MIN_SAS_LIFETIME {
            return Err(ConfigError::SasLifetimeTooShort { lifetime });
        }
        self.sas_lifetime = lifetime;
        Ok(self)
    }

    /// The storage account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The container.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The prefix inside the container, without slashes at either end (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// How failed requests are retried.
    pub fn retry(&self) -> RetryConfig {
        self.retry
    }

    /// How long one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long a self-signed SAS is valid.
    pub fn sas_lifetime(&self) -> Duration {
        self.sas_lifetime
    }

    /// The blob service endpoint.
    pub fn endpoint(&self) -> Url {
        match &self.endpoint {
            Some(url) => url.clone(),
            None => public_endpoint(&self.account),
        }
    }

    /// The container's URL.
    pub fn container_url(&self) -> Url {
        let mut url = self.endpoint();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.container);
        }
        url
    }

    /// The store URL, `azure://ACCOUNT/CONTAINER[/PREFIX]`.
    pub fn store_url(&self) -> String {
        let mut url = format!("{URL_SCHEME}://{}/{}", self.account, self.container);
        if !self.prefix.is_empty() {
            url.push('/');
            url.push_str(&self.prefix);
        }
        url
    }
}

impl fmt::Display for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.store_url())
    }
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("store", &self.store_url())
            .field("endpoint", &self.endpoint().as_str())
            .field("credential", &self.credential)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("sas_lifetime", &self.sas_lifetime)
            .finish()
    }
}

fn public_endpoint(account: &str) -> Url {
    let text = format!("https://{account}.blob.core.windows.net/");
    // The account name was validated as lowercase letters and digits, a valid host label.
    Url::parse(&text).unwrap_or_else(|e| unreachable!("{text} is a valid URL: {e}"))
}

fn validate_account(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidAccount {
            name: name.to_owned(),
        })
    }
}

fn validate_container(name: &str) -> Result<(), ConfigError> {
    let reason = if !(3..=63).contains(&name.len()) {
        Some("it must be 3 to 63 characters long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        Some("'-' may not start or end it, nor follow another '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ConfigError::InvalidContainer {
            name: name.to_owned(),
            reason,
        }),
    }
}

fn normalize_prefix(prefix: &str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim_matches('/');
    let invalid = |reason| ConfigError::InvalidPrefix {
        prefix: prefix.to_owned(),
        reason,
    };
    if trimmed.len() > 512 {
        return Err(invalid("it is longer than 512 characters"));
    }
    for segment in trimmed.split('/').filter(|_| !trimmed.is_empty()) {
        if segment.is_empty() {
            return Err(invalid("it has an empty segment ('//')"));
        }
        if segment == "." || segment == ".." {
            return Err(invalid("'.' and '..' segments are not allowed"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !segment.chars().all(allowed) {
            return Err(invalid(
                "only A-Z a-z 0-9 . _ - and '/' between segments are allowed",
            ));
        }
    }
    Ok(trimmed.to_owned())
}

fn parse_endpoint(endpoint: &str) -> Result<Url, ConfigError> {
    let invalid = |reason| ConfigError::InvalidEndpoint { reason };
    let url = Url::parse(endpoint.trim()).map_err(|_| invalid("it is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("its scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            "it may not carry a query, fragment or user (give a SAS as an option)",
        ));
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(invalid("it has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_azure_rules() {
        for good in ["abc", "pool-test-1", &"a".repeat(63)] {
            assert!(validate_container(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Abc", "a_b", "-ab", "ab-", "a--b", &"a".repeat(64)] {
            assert!(validate_container(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_trimmed_and_checked() {
        assert_eq!(normalize_prefix("/a/b-1/").unwrap(), "a/b-1");
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        for bad in ["a//b", "a/../b", "a b", "a?b", "é"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_url_appends_to_the_endpoint_path() {
        let c = AzureConfig::emulator("http://127.0.0.1:4000/devstoreaccount1/", "pool").unwrap();
        assert_eq!(
            c.container_url().as_str(),
            "http://127.0.0.1:4000/devstoreaccount1/pool"
        );
        let c = AzureConfig::new("acct", "pool").unwrap();
        assert_eq!(
            c.container_url().as_str(),
            "https://acct.blob.core.windows.net/pool"
        );
    }
}
