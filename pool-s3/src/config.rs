//! Where the store lives and how to reach it: bucket, prefix, endpoint, region, addressing
//! style, credentials, retries and timeouts.

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// The URL scheme of an S3 store.
pub const SCHEME: &str = "s3";

/// The region used when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A string that never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the SDK.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the S3 client gets its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3Credentials {
    /// None configured; connecting fails rather than guessing.
    Missing,
    /// Fixed keys, e.g. from command-line flags or environment variables.
    Static {
        /// The access key id (an identifier, shown in `Debug`).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// A session token for temporary credentials.
        session_token: Option<Secret>,
    },
    /// The standard AWS chain: environment, profile files, web identity, container and
    /// instance metadata. Only used when asked for explicitly.
    #[cfg(feature = "credential-chain")]
    Chain,
}

/// How often and how patiently requests are retried.
///
/// Throttling (503 SlowDown), other 5xx answers, dropped connections and timed-out
/// attempts are retried with jittered exponential backoff; everything else is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Attempts per operation, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the first retry (randomised below this, doubling after).
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Request time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// One attempt of an operation, body transfer included; a slower attempt is retried.
    pub attempt: Duration,
    /// A whole operation, retries and backoff included.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(30),
            operation: Duration::from_secs(120),
        }
    }
}

/// The configuration of an [`S3Store`](crate::S3Store).
///
/// Built from a store URL with [`S3Config::from_url`] or from a bucket name with
/// [`S3Config::new`], then refined with the `with_*` methods. `Debug` shows everything
/// but the secret key and session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: String,
    path_style: Option<bool>,
    credentials: S3Credentials,
    retry: RetrySettings,
    timeouts: Timeouts,
}

impl S3Config {
    /// A configuration for `bucket`, with no prefix, AWS's endpoint for the default
    /// region, and no credentials yet.
    pub fn new(bucket: impl Into<String>) -> Result<Self, ConfigError> {
        let bucket = bucket.into();
        check_bucket(&bucket)?;
        Ok(Self {
            bucket,
            prefix: String::new(),
            endpoint: None,
            region: DEFAULT_REGION.to_owned(),
            path_style: None,
            credentials: S3Credentials::Missing,
            retry: RetrySettings::default(),
            timeouts: Timeouts::default(),
        })
    }

    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&path_style=true|false]`.
    ///
    /// Credentials are never read from the URL (it ends up in logs and process lists);
    /// a URL carrying them is refused.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let rest = strip_scheme(url)?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        if location.contains('@') {
            return Err(ConfigError::CredentialsInUrl);
        }
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        let mut config = Self::new(bucket)?.with_prefix(prefix)?;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            config = config.with_url_option(name, &percent_decode(value)?)?;
        }
        Ok(config)
    }

    fn with_url_option(self, name: &str, value: &str) -> Result<Self, ConfigError> {
        match name {
            "endpoint" => self.with_endpoint(value),
            "region" => self.with_region(value),
            "path_style" => match value {
                "true" => Ok(self.with_path_style(true)),
                "false" => Ok(self.with_path_style(false)),
                _ => Err(ConfigError::InvalidOption {
                    name: name.to_owned(),
                    reason: "expected true or false".to_owned(),
                }),
            },
            "access_key" | "access_key_id" | "secret_key" | "secret_access_key"
            | "session_token" => Err(ConfigError::CredentialsInUrl),
            _ => Err(ConfigError::UnknownOption {
                name: name.to_owned(),
            }),
        }
    }

    /// Keeps the documents under `prefix` inside the bucket. Slashes at either end are
    /// ignored; empty segments (`a//b`), `.` and `..` are refused.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, ConfigError> {
        let prefix = prefix.trim_matches('/');
        let mut segments = prefix.split('/');
        if !prefix.is_empty()
            && let Some(bad) = segments.find(|s| s.is_empty() || *s == "." || *s == "..")
        {
            let reason = format!("segment {bad:?} is not allowed");
            return Err(ConfigError::InvalidPrefix {
                prefix: prefix.to_owned(),
                reason,
            });
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Talks to this endpoint (`http://` or `https://`) instead of AWS, e.g. a local S3
    /// server. Unless set otherwise, a custom endpoint uses path-style addressing.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, ConfigError> {
        let rest = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"));
        let host = rest
            .map(|r| r.split('/').next().unwrap_or_default())
            .unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            let reason = "expected http://HOST[:PORT] or https://HOST[:PORT]".to_owned();
            return Err(ConfigError::InvalidOption {
                name: "endpoint".to_owned(),
                reason,
            });
        }
        self.endpoint = Some(endpoint.trim_end_matches('/').to_owned());
        Ok(self)
    }

    /// Signs requests for this region.
    pub fn with_region(mut self, region: &str) -> Result<Self, ConfigError> {
        let valid = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            let reason = "expected a region name such as us-east-1".to_owned();
            return Err(ConfigError::InvalidOption {
                name: "region".to_owned(),
                reason,
            });
        }
        self.region = region.to_owned();
        Ok(self)
    }

    /// Addresses the bucket in the path (`https://host/bucket/key`) rather than in the host
    /// name (`https://bucket.host/key`).
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Uses fixed keys.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: None,
        };
        self
    }

    /// Adds a session token to static credentials (ignored for any other source).
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        if let S3Credentials::Static { session_token, .. } = &mut self.credentials {
            *session_token = Some(Secret::new(token));
        }
        self
    }

    /// Uses the standard AWS credential chain, which may ask the instance metadata service.
    #[cfg(feature = "credential-chain")]
    pub fn with_credential_chain(mut self) -> Self {
        self.credentials = S3Credentials::Chain;
        self
    }

    /// Replaces the retry settings.
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix, without slashes at either end (empty for none).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The custom endpoint, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The signing region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether requests use path-style addressing: as set, or by default exactly when a
    /// custom endpoint is configured.
    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(self.endpoint.is_some())
    }

    /// The credential source.
    pub fn credentials(&self) -> &S3Credentials {
        &self.credentials
    }

    /// The retry settings.
    pub fn retry(&self) -> RetrySettings {
        self.retry
    }

    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The store as a URL without options: `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("{SCHEME}://{}", self.bucket)
        } else {
            format!("{SCHEME}://{}/{}", self.bucket, self.prefix)
        }
    }
}

fn strip_scheme(url: &str) -> Result<&str, ConfigError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(ConfigError::NotS3Url { scheme: None });
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(ConfigError::NotS3Url {
            scheme: Some(scheme.to_owned()),
        });
    }
    Ok(rest)
}

/// Checks the S3 naming rules for buckets usable with path-style and virtual-host
/// addressing: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending
/// with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let reason = if !(3..=63).contains(&bucket.len()) {
        Some("must be 3 to 63 characters long")
    } else if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        Some("may contain only lowercase letters, digits, dots and hyphens")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("must start and end with a letter or digit")
    } else if bucket.contains("..") {
        Some("may not contain two dots in a row")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::InvalidBucket {
            bucket: bucket.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Decodes `%XX` escapes in a URL query value.
fn percent_decode(value: &str) -> Result<String, ConfigError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(ConfigError::BadEscape);
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConfigError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(
            percent_decode("http%3A%2F%2F127.0.0.1%3a9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(percent_decode("%zz"), Err(ConfigError::BadEscape));
        assert_eq!(percent_decode("%4"), Err(ConfigError::BadEscape));
    }

    #[test]
    fn bucket_rules() {
        for good in ["abc", "pool-test.1", &"a".repeat(63)] {
            assert!(check_bucket(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Upper",
            "-start",
            "end-",
            "a..b",
            "under_score",
            &"a".repeat(64),
        ] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }
}
