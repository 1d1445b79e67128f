//! The configuration error, and how Azure failures become [`StoreError`]s.
//!
//! SDK errors are reduced to a [`Failure`] at once: the status and service error code of an
//! HTTP answer, or the redacted text of a transport error. Nothing from the SDK is kept as
//! an error source, because a transport error's text carries the request URL, and with it
//! a SAS signature.

use std::time::Duration;

use azure_core::error::ErrorKind as SdkKind;
use azure_core::http::headers::HeaderName;
use pool_storage::{ErrorKind, StoreError};

/// The backend name in errors and capabilities.
pub(crate) const BACKEND: &str = "azure";

/// Why a store URL or option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not of the form `scheme://...`.
    #[error("a store URL has the form azure://ACCOUNT/CONTAINER[/PREFIX]")]
    NotAStoreUrl,
    /// The URL's scheme is not `azure`.
    #[error("store URL scheme is {scheme:?}, expected \"azure\"")]
    WrongScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The URL carries a query, fragment or user part.
    #[error(
        "an azure:// store URL takes no query, fragment or user part; \
         give the endpoint and credentials as options"
    )]
    UnexpectedUrlParts,
    /// The storage account name is not valid.
    #[error("storage account name {name:?} must be 3 to 24 lowercase letters or digits")]
    InvalidAccount {
        /// The name given.
        name: String,
    },
    /// The container name is not valid.
    #[error("container name {name:?} is not valid: {reason}")]
    InvalidContainer {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The prefix is not valid.
    #[error("prefix {prefix:?} is not valid: {reason}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The endpoint is not a usable URL (the text is not repeated: it may hold a secret).
    #[error("endpoint is not valid: {reason}")]
    InvalidEndpoint {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The account key is not base64.
    #[error("the account key is not valid base64")]
    InvalidAccountKey,
    /// The SAS token has no signature.
    #[error("the SAS token has no sig= parameter")]
    InvalidSas,
    /// A self-signed SAS would live too briefly to be renewed ahead of use.
    #[error("a SAS lifetime of {lifetime:?} is too short (at least 2 minutes)")]
    SasLifetimeTooShort {
        /// The lifetime asked for.
        lifetime: Duration,
    },
    /// Token credentials are only sent over HTTPS.
    #[error("a token credential needs an https endpoint, not {scheme}")]
    TokenNeedsHttps {
        /// The endpoint's scheme.
        scheme: String,
    },
    /// The SDK refused to build a credential or client.
    #[error("could not set up the Azure client: {0}")]
    Client(String),
}

/// One failed request, reduced to what decides retrying and the error kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The service answered with an error status.
    Http {
        /// The HTTP status.
        status: u16,
        /// The service's error code (`BlobNotFound`, `ConditionNotMet`, ...).
        code: Option<String>,
        /// How long the service asked us to wait.
        retry_after: Option<Duration>,
    },
    /// No connection was made; the request was never sent.
    Connection(String),
    /// The request failed while under way; it may or may not have taken effect.
    Io(String),
    /// No answer within the request timeout.
    Timeout(Duration),
    /// No token could be obtained.
    Credential(String),
    /// Anything else (a malformed answer, a bug).
    Other(String),
}

impl Failure {
    /// Reduces an SDK error, redacting any SAS signature from its text.
    pub(crate) fn from_sdk(e: &azure_core::Error) -> Self {
        match e.kind() {
            SdkKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => Self::Http {
                status: u16::from(*status),
                code: error_code.clone(),
                retry_after: raw_response.as_ref().and_then(|r| retry_after(r.headers())),
            },
            SdkKind::Connection => Self::Connection(describe(e)),
            SdkKind::Io => Self::Io(describe(e)),
            SdkKind::Credential => Self::Credential(describe(e)),
            _ => Self::Other(describe(e)),
        }
    }

    /// The HTTP status, if the service answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the service answered with this error code.
    pub(crate) fn has_code(&self, expected: &str) -> bool {
        matches!(self, Self::Http { code: Some(c), .. } if c == expected)
    }

    /// Whether trying the same request again can succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Http { status, .. } => {
                matches!(status, 408 | 429) || (*status >= 500 && !matches!(status, 501 | 505))
            }
            Self::Connection(_) | Self::Io(_) | Self::Timeout(_) => true,
            Self::Credential(_) | Self::Other(_) => false,
        }
    }

    /// Whether a write that failed this way may nevertheless have been stored.
    pub(crate) fn may_have_applied(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500,
            Self::Io(_) | Self::Timeout(_) => true,
            Self::Connection(_) | Self::Credential(_) | Self::Other(_) => false,
        }
    }

    /// Whether a conditional write lost its precondition: 409 (the blob exists, for a
    /// create), 412 (another ETag), or 404 of the blob (it was deleted under us).
    pub(crate) fn is_lost_precondition(&self) -> bool {
        matches!(self.status(), Some(409 | 412)) || self.is_blob_not_found()
    }

    /// Whether the blob (not the container) does not exist.
    pub(crate) fn is_blob_not_found(&self) -> bool {
        self.status() == Some(404) && !self.has_code("ContainerNotFound")
    }

    /// The delay the service asked for, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error kind a caller matches on.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Http {
                status: 409 | 412, ..
            } => ErrorKind::Conflict,
            Self::Http {
                status: 401 | 403, ..
            }
            | Self::Credential(_) => ErrorKind::PermissionDenied,
            Self::Http { status: 404, .. } if self.has_code("ContainerNotFound") => {
                ErrorKind::InvalidInput
            }
            Self::Http {
                status: 400 | 411 | 413 | 414 | 416,
                ..
            } => ErrorKind::InvalidInput,
            Self::Timeout(_) => ErrorKind::Timeout,
            _ if self.is_retryable() => ErrorKind::Unavailable,
            _ => ErrorKind::Other,
        }
    }

    /// The store error for `what` (naming the container and blob) after `attempts` tries.
    pub(crate) fn into_store_error(self, what: &str, attempts: u32) -> StoreError {
        let tries = if attempts > 1 {
            format!(" after {attempts} attempts")
        } else {
            String::new()
        };
        let hint = if self.has_code("ContainerNotFound") {
            " (the container does not exist; create it first)"
        } else {
            ""
        };
        let kind = self.kind();
        let temporary = self.is_retryable();
        StoreError::new(kind, BACKEND, format!("{what}{tries}{hint}"))
            .with_source(self.to_string())
            .with_temporary(temporary)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { status, code, .. } => {
                write!(
                    f,
                    "HTTP {status} {}",
                    code.as_deref().unwrap_or("(no error code)")
                )
            }
            Self::Connection(m) => write!(f, "connection failed: {m}"),
            Self::Io(m) => write!(f, "request failed: {m}"),
            Self::Timeout(d) => write!(f, "no answer within {d:?}"),
            Self::Credential(m) => write!(f, "no token: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

/// The error and its causes on one line, with SAS signatures removed.
fn describe(e: &azure_core::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    redact_signatures(&text)
}

/// Replaces the value of every `sig=` query parameter in `text` with `REDACTED`.
pub(crate) fn redact_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        let starts_param = at == 0 || matches!(rest.as_bytes()[at - 1], b'?' | b'&');
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        if starts_param {
            let end = rest.find(|c: char| c == '&' || c == ')' || c.is_whitespace());
            out.push_str("REDACTED");
            rest = &rest[end.unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

fn retry_after(headers: &azure_core::http::headers::Headers) -> Option<Duration> {
    let millis = ["x-ms-retry-after-ms", "retry-after-ms"]
        .into_iter()
        .find_map(|name| {
            headers
                .get_optional_str(&HeaderName::from_static(name))?
                .trim()
                .parse::<u64>()
                .ok()
        });
    let secs = || {
        let v = headers.get_optional_str(&HeaderName::from_static("retry-after"))?;
        v.trim().parse::<u64>().ok().map(|s| s.saturating_mul(1000))
    };
    millis.or_else(secs).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, code: &str) -> Failure {
        Failure::Http {
            status,
            code: Some(code.to_owned()),
            retry_after: None,
        }
    }

    #[test]
    fn retries_throttling_server_errors_and_transport_failures_only() {
        for f in [
            http(429, "ServerBusy"),
            http(500, "InternalError"),
            http(503, "ServerBusy"),
            http(504, "x"),
            http(408, "x"),
            Failure::Connection("refused".into()),
            Failure::Io("reset".into()),
            Failure::Timeout(Duration::from_secs(1)),
        ] {
            assert!(f.is_retryable(), "{f}");
        }
        for f in [
            http(400, "InvalidHeaderValue"),
            http(403, "AuthenticationFailed"),
            http(404, "BlobNotFound"),
            http(409, "BlobAlreadyExists"),
            http(412, "ConditionNotMet"),
            http(501, "x"),
            Failure::Credential("no identity".into()),
            Failure::Other("bug".into()),
        ] {
            assert!(!f.is_retryable(), "{f}");
        }
    }

    #[test]
    fn kinds_follow_status() {
        assert_eq!(http(409, "BlobAlreadyExists").kind(), ErrorKind::Conflict);
        assert_eq!(http(412, "ConditionNotMet").kind(), ErrorKind::Conflict);
        assert_eq!(
            http(403, "AuthorizationFailure").kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            http(404, "ContainerNotFound").kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(http(503, "ServerBusy").kind(), ErrorKind::Unavailable);
        assert_eq!(Failure::Timeout(Duration::ZERO).kind(), ErrorKind::Timeout);
        assert!(http(404, "BlobNotFound").is_lost_precondition());
        assert!(!http(404, "ContainerNotFound").is_lost_precondition());
    }

    #[test]
    fn only_answered_writes_are_known_not_to_have_applied() {
        assert!(Failure::Timeout(Duration::ZERO).may_have_applied());
        assert!(Failure::Io("reset".into()).may_have_applied());
        assert!(http(500, "InternalError").may_have_applied());
        assert!(!Failure::Connection("refused".into()).may_have_applied());
        assert!(!http(429, "TooManyRequests").may_have_applied());
    }

    #[test]
    fn store_errors_carry_context_kind_and_retry_class() {
        let e = http(503, "ServerBusy").into_store_error("save of c/p.json", 5);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        assert_eq!(e.context(), "save of c/p.json after 5 attempts");
        let e = http(404, "ContainerNotFound").into_store_error("load of c/p.json", 1);
        assert!(!e.is_temporary());
        assert!(
            e.context().contains("container does not exist"),
            "{}",
            e.context()
        );
    }

    #[test]
    fn signatures_are_redacted() {
        let text = "error sending request for url (http://h/c/b?sv=1&sig=abc%2Bdef&se=2): x";
        assert_eq!(
            redact_signatures(text),
            "error sending request for url (http://h/c/b?sv=1&sig=REDACTED&se=2): x"
        );
        let text = "http://h/c/b?sig=secret) and design=ok";
        assert_eq!(
            redact_signatures(text),
            "http://h/c/b?sig=REDACTED) and design=ok"
        );
    }
}
