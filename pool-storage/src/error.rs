//! The one error type of every storage backend.

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure a [`StoreError`] is; callers match on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A write's precondition did not hold: another writer got there first.
    Conflict,
    /// A stored document could not be decoded.
    Corrupt,
    /// The store could not be reached or refused service for now.
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// The credentials do not allow the operation.
    PermissionDenied,
    /// The request itself was wrong (too large, inconsistent); retrying will not help.
    InvalidInput,
    /// The backend does not support the operation.
    Unsupported,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Whether a failure of this kind is usually temporary.
    pub fn is_temporary_by_default(self) -> bool {
        matches!(self, Self::Unavailable | Self::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Conflict => "conflict",
            Self::Corrupt => "corrupt data",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timed out",
            Self::PermissionDenied => "permission denied",
            Self::InvalidInput => "invalid input",
            Self::Unsupported => "unsupported",
            Self::Other => "error",
        };
        f.write_str(s)
    }
}

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// A storage failure: its kind, whether a retry can help, the backend, what was being
/// done, and the underlying cause as [`source`](StdError::source).
pub struct StoreError {
    kind: ErrorKind,
    temporary: bool,
    backend: &'static str,
    context: String,
    source: Option<Source>,
}

impl StoreError {
    /// A new error of `kind` from `backend`; `context` says what failed (naming the
    /// container, file or key).
    pub fn new(kind: ErrorKind, backend: &'static str, context: impl Into<String>) -> Self {
        let temporary = kind.is_temporary_by_default();
        Self {
            kind,
            temporary,
            backend,
            context: context.into(),
            source: None,
        }
    }

    /// A lost precondition.
    pub fn conflict(backend: &'static str, context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, backend, context)
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides whether a retry can help.
    pub fn with_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Whether this is a lost precondition.
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }

    /// The backend that failed.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retry = if self.temporary {
            "temporary"
        } else {
            "permanent"
        };
        write!(
            f,
            "{} store: {} ({retry}): {}",
            self.backend, self.kind, self.context
        )
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StoreError");
        d.field("kind", &self.kind)
            .field("temporary", &self.temporary);
        d.field("backend", &self.backend)
            .field("context", &self.context);
        if let Some(s) = &self.source {
            d.field("source", &format_args!("{s}"));
        }
        d.finish()
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_sets_the_default_retry_class() {
        assert!(StoreError::new(ErrorKind::Timeout, "memory", "load").is_temporary());
        assert!(!StoreError::conflict("memory", "save").is_temporary());
        let forced = StoreError::new(ErrorKind::Other, "memory", "x").with_temporary(true);
        assert!(forced.is_temporary());
    }

    #[test]
    fn display_names_backend_kind_and_context_but_not_the_cause() {
        let cause = std::io::Error::other("disk on fire");
        let e = StoreError::new(ErrorKind::Unavailable, "sqlite", "save to /tmp/p.db")
            .with_source(cause);
        assert_eq!(
            e.to_string(),
            "sqlite store: unavailable (temporary): save to /tmp/p.db"
        );
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk on fire")
        );
    }
}
