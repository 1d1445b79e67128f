//! Configuration errors, and the conversion of SDK failures into [`StoreError`].

use std::fmt;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use pool_storage::{ErrorKind, StoreError};

/// The backend name in every [`StoreError`] this crate returns.
pub(crate) const BACKEND: &str = "s3";

/// Why an S3 store could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not start with `s3://`.
    #[error("not an s3:// URL (scheme {})", scheme.as_deref().unwrap_or("missing"))]
    NotS3Url {
        /// The scheme found, if any.
        scheme: Option<String>,
    },
    /// The bucket name breaks the S3 naming rules.
    #[error("invalid bucket name {bucket:?}: {reason}")]
    InvalidBucket {
        /// The name given.
        bucket: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The key prefix is not usable.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option has a value that cannot be used (the value is not repeated, in case it
    /// was a secret put in the wrong place).
    #[error("invalid value for option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: String,
        /// What was expected.
        reason: String,
    },
    /// The URL names an option this backend does not know.
    #[error("unknown option {name} in the store URL (known: endpoint, region, path_style)")]
    UnknownOption {
        /// The option.
        name: String,
    },
    /// The URL carries credentials, which belong in flags or the environment.
    #[error("credentials are not accepted in the store URL; pass them as options instead")]
    CredentialsInUrl,
    /// A `%` escape in the URL is malformed.
    #[error("malformed %-escape in the store URL")]
    BadEscape,
    /// No credential source was configured.
    #[error("no S3 credentials configured (set an access key and a secret key)")]
    MissingCredentials,
    /// The standard credential chain could not be set up.
    #[error("the AWS credential chain could not be set up: {0}")]
    CredentialChain(String),
}

/// What the SDK reported, kept as the `source` of a [`StoreError`].
#[derive(Debug)]
pub(crate) struct S3Failure {
    status: Option<u16>,
    code: Option<String>,
    detail: String,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(status) = self.status {
            write!(f, "HTTP {status} ")?;
        }
        if let Some(code) = &self.code {
            write!(f, "{code} ")?;
        }
        f.write_str(&self.detail)
    }
}

impl std::error::Error for S3Failure {}

/// Converts an SDK failure of the operation described by `context` (which names the
/// bucket and key) into a [`StoreError`] of the right kind and retry class.
pub(crate) fn store_error<E>(err: SdkError<E>, context: String) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    convert(err, context, false)
}

/// Like [`store_error`] for a PUT with `If-Match`, which S3 answers with 404 `NoSuchKey`
/// when there is nothing to match: a precondition that does not hold, so a conflict.
pub(crate) fn if_match_error<E>(err: SdkError<E>, context: String) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    convert(err, context, true)
}

fn convert<E>(err: SdkError<E>, context: String, missing_is_conflict: bool) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let kind = match &err {
        SdkError::TimeoutError(_) => ErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => ErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_user() => ErrorKind::InvalidInput,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorKind::Unavailable,
        SdkError::ConstructionFailure(_) => ErrorKind::InvalidInput,
        _ if missing_is_conflict && code.as_deref() == Some("NoSuchKey") => ErrorKind::Conflict,
        _ => classify(status, code.as_deref()),
    };
    let detail = DisplayErrorContext(&err).to_string();
    StoreError::new(kind, BACKEND, context).with_source(S3Failure {
        status,
        code,
        detail,
    })
}

/// The kind of an error answer from the service.
fn classify(status: Option<u16>, code: Option<&str>) -> ErrorKind {
    match (status, code) {
        (Some(412), _) | (_, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            ErrorKind::Conflict
        }
        (_, Some("SlowDown" | "RequestTimeout" | "OperationAborted")) => ErrorKind::Unavailable,
        (Some(401 | 403), _) => ErrorKind::PermissionDenied,
        (Some(429), _) | (Some(500..=599), _) => ErrorKind::Unavailable,
        (Some(400 | 411 | 413 | 414), _) => ErrorKind::InvalidInput,
        _ => ErrorKind::Other,
    }
}

/// Whether a create-bucket failure means the bucket is already ours.
pub(crate) fn already_ours(err: &SdkError<CreateBucketError>) -> bool {
    err.as_service_error()
        .is_some_and(CreateBucketError::is_bucket_already_owned_by_you)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_and_races_are_conflicts() {
        assert_eq!(
            classify(Some(412), Some("PreconditionFailed")),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(Some(409), Some("ConditionalRequestConflict")),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(Some(409), Some("BucketNotEmpty")),
            ErrorKind::Other
        );
    }

    #[test]
    fn throttling_and_server_errors_are_temporary() {
        for (status, code) in [(503, "SlowDown"), (500, "InternalError"), (429, "TooMany")] {
            let kind = classify(Some(status), Some(code));
            assert!(
                kind.is_temporary_by_default(),
                "{status} {code} gave {kind}"
            );
        }
        assert_eq!(
            classify(Some(403), Some("AccessDenied")),
            ErrorKind::PermissionDenied
        );
    }
}
