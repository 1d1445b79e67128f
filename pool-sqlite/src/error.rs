//! The crate's error type for opening a store, and how SQLite failures become the storage
//! error every backend returns.

use pool_storage::{ErrorKind, StoreError};
use rusqlite::ErrorCode;

/// The backend name in every [`StoreError`] this crate returns.
pub(crate) const BACKEND: &str = "sqlite";

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store URL was refused or a database could not be opened. Every variant about a
/// file names it; a refused file is never written to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The URL is not a `sqlite://` store URL.
    #[error("{url:?} is not a SQLite store URL: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file was written by a newer release whose layout this one does not know.
    #[error(
        "{location} has schema version {found}, newer than the {supported} this release \
         reads; it was left untouched"
    )]
    NewerSchema {
        /// The database file.
        location: String,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this release reads.
        supported: i64,
    },
    /// The file is not a SQLite database at all.
    #[error("{location} is not a SQLite database; it was left untouched")]
    NotADatabase {
        /// The file.
        location: String,
    },
    /// The file is a SQLite database that this store did not create.
    #[error(
        "{location} is a SQLite database of another application (application id \
         {application_id:#x}); it was left untouched"
    )]
    ForeignDatabase {
        /// The file.
        location: String,
        /// The application id in its header.
        application_id: i32,
    },
    /// The file is a pool database, but damaged.
    #[error("{location} is damaged ({detail}); it was left untouched")]
    Damaged {
        /// The file.
        location: String,
        /// What SQLite found wrong, in its words.
        detail: String,
    },
    /// The file could not be opened or prepared (missing directory, permissions, a disk
    /// error, or a lock held too long).
    #[error("cannot open {location}")]
    Open {
        /// The file.
        location: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

impl SqliteError {
    /// The storage error kind this failure corresponds to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. } => ErrorKind::InvalidInput,
            Self::NewerSchema { .. }
            | Self::NotADatabase { .. }
            | Self::ForeignDatabase { .. }
            | Self::Damaged { .. } => ErrorKind::Corrupt,
            Self::Open { .. } => ErrorKind::Unavailable,
        }
    }

    pub(crate) fn open(location: &str, source: impl Into<BoxError>) -> Self {
        Self::Open {
            location: location.to_owned(),
            source: source.into(),
        }
    }
}

impl From<SqliteError> for StoreError {
    fn from(e: SqliteError) -> Self {
        StoreError::new(e.kind(), BACKEND, "opening the store").with_source(e)
    }
}

/// A failure inside one operation: SQLite's, or one the operation decided on.
#[derive(Debug)]
pub(crate) enum OpError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl OpError {
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Self::Sql(e) if is_busy(e))
    }

    /// The storage error, with `context` (naming the file) for SQLite failures.
    pub(crate) fn into_store(self, context: impl FnOnce() -> String) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Sql(e) => StoreError::new(sql_kind(&e), BACKEND, context()).with_source(e),
        }
    }
}

/// Whether SQLite refused because another connection holds a lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The storage error kind of a SQLite failure.
pub(crate) fn sql_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _) => code_kind(f.code),
        E::ToSqlConversionFailure(_) => ErrorKind::InvalidInput,
        // A stored value of the wrong type or range: the row is not what this store wrote.
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => ErrorKind::Corrupt,
        _ => ErrorKind::Other,
    }
}

fn code_kind(code: ErrorCode) -> ErrorKind {
    match code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::Timeout,
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => ErrorKind::Corrupt,
        ErrorCode::SystemIoFailure
        | ErrorCode::CannotOpen
        | ErrorCode::DiskFull
        | ErrorCode::FileLockingProtocolFailed
        | ErrorCode::OutOfMemory => ErrorKind::Unavailable,
        ErrorCode::PermissionDenied
        | ErrorCode::ReadOnly
        | ErrorCode::AuthorizationForStatementDenied => ErrorKind::PermissionDenied,
        ErrorCode::ConstraintViolation | ErrorCode::TooBig => ErrorKind::InvalidInput,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_codes_map_to_kinds_callers_act_on() {
        assert!(is_busy(&failure(rusqlite::ffi::SQLITE_BUSY)));
        assert!(is_busy(&failure(rusqlite::ffi::SQLITE_LOCKED)));
        assert!(!is_busy(&failure(rusqlite::ffi::SQLITE_CORRUPT)));
        let kind = |code| sql_kind(&failure(code));
        assert_eq!(kind(rusqlite::ffi::SQLITE_BUSY), ErrorKind::Timeout);
        assert_eq!(kind(rusqlite::ffi::SQLITE_CORRUPT), ErrorKind::Corrupt);
        assert_eq!(kind(rusqlite::ffi::SQLITE_NOTADB), ErrorKind::Corrupt);
        assert_eq!(kind(rusqlite::ffi::SQLITE_FULL), ErrorKind::Unavailable);
        assert_eq!(
            kind(rusqlite::ffi::SQLITE_READONLY),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(rusqlite::ffi::SQLITE_CONSTRAINT),
            ErrorKind::InvalidInput
        );
        let range = rusqlite::Error::IntegralValueOutOfRange(0, -1);
        assert_eq!(sql_kind(&range), ErrorKind::Corrupt);
    }

    #[test]
    fn open_errors_keep_their_detail_as_the_source() {
        let e = SqliteError::NotADatabase {
            location: "/tmp/x.db".into(),
        };
        assert_eq!(
            e.to_string(),
            "/tmp/x.db is not a SQLite database; it was left untouched"
        );
        let store: StoreError = e.into();
        assert_eq!(store.kind(), ErrorKind::Corrupt);
        assert!(!store.is_temporary());
        assert!(
            store
                .source()
                .is_some_and(|s| s.to_string().contains("/tmp/x.db"))
        );
        let timeout = OpError::Sql(failure(rusqlite::ffi::SQLITE_BUSY));
        assert!(timeout.is_busy());
        let store = timeout.into_store(|| "saving to /tmp/x.db".into());
        assert!(store.is_temporary() && store.context().contains("/tmp/x.db"));
    }
}
