//! Where the database lives and how it is opened, and the `sqlite://` URL form that picks
//! this backend.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::SqliteError;

const FILE_PREFIX: &str = "sqlite://";
const MEMORY_URL: &str = "sqlite::memory:";

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database file, created when missing. A relative path is taken from the working
    /// directory. SQLite keeps `-wal` and `-shm` files beside it.
    File(PathBuf),
    /// A private database in memory that lives as long as the store: for tests.
    Memory,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Memory => f.write_str(MEMORY_URL),
        }
    }
}

/// How much a commit must survive before a save returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each commit is synced to disk before the save returns (`synchronous = FULL`): it
    /// survives a crash of the process and a power cut.
    #[default]
    Full,
    /// Each commit survives a crash of the process; the last few may be lost on a power cut
    /// (`synchronous = NORMAL`). Several times faster per commit.
    Normal,
}

/// How to open a [`SqliteStore`](crate::SqliteStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Where the database lives.
    pub location: Location,
    /// How long one SQLite call waits for another connection's lock before it gives up.
    pub busy_timeout: Duration,
    /// How long an operation keeps retrying a database that stays busy before it fails
    /// with a temporary `Timeout` error.
    pub busy_deadline: Duration,
    /// How durable a commit is when a save returns.
    pub durability: Durability,
    /// How many idle read connections are kept open (file databases only).
    pub max_idle_readers: usize,
    /// Whether opening an existing file first checks every page (`PRAGMA quick_check`),
    /// so a damaged file is refused at open rather than at the first load.
    pub verify_on_open: bool,
}

impl SqliteConfig {
    /// The defaults for a database file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::at(Location::File(path.into()))
    }

    /// The defaults for a private in-memory database.
    pub fn memory() -> Self {
        Self::at(Location::Memory)
    }

    fn at(location: Location) -> Self {
        Self {
            location,
            busy_timeout: Duration::from_secs(5),
            busy_deadline: Duration::from_secs(60),
            durability: Durability::Full,
            max_idle_readers: 4,
            verify_on_open: true,
        }
    }

    /// Parses a store URL: `sqlite://PATH` (`sqlite://pool.db` is relative to the working
    /// directory, `sqlite:///var/lib/pool.db` absolute; `%XX` escapes are decoded) or
    /// `sqlite::memory:`.
    ///
    /// Unlike a web URL, nothing after `sqlite://` is a host name: it is all path.
    ///
    /// ```
    /// use pool_sqlite::{Location, SqliteConfig};
    ///
    /// let c = SqliteConfig::from_url("sqlite://data/pool.db")?;
    /// assert_eq!(c.location, Location::File("data/pool.db".into()));
    /// assert_eq!(SqliteConfig::from_url("sqlite::memory:")?.location, Location::Memory);
    /// assert!(SqliteConfig::from_url("s3://bucket/pool").is_err());
    /// # Ok::<(), pool_sqlite::SqliteError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, SqliteError> {
        let invalid = |reason| SqliteError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if url == MEMORY_URL {
            return Ok(Self::memory());
        }
        let Some(rest) = url.strip_prefix(FILE_PREFIX) else {
            let reason = if url.starts_with("sqlite:") {
                "expected sqlite://PATH or sqlite::memory:"
            } else {
                "the scheme is not sqlite"
            };
            return Err(invalid(reason));
        };
        if rest.is_empty() {
            return Err(invalid("no file path follows sqlite://"));
        }
        if rest == ":memory:" {
            return Err(invalid("an in-memory database is written sqlite::memory:"));
        }
        if rest.contains(['?', '#']) {
            return Err(invalid("query strings and fragments are not supported"));
        }
        if rest.ends_with('/') {
            return Err(invalid("the path names a directory, not a file"));
        }
        let path = percent_decode(rest).ok_or_else(|| invalid("a %XX escape is malformed"))?;
        Ok(Self::file(path))
    }
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> PathBuf {
        match SqliteConfig::from_url(url).unwrap().location {
            Location::File(p) => p,
            Location::Memory => panic!("{url} parsed as memory"),
        }
    }

    fn reason_of(url: &str) -> &'static str {
        match SqliteConfig::from_url(url).unwrap_err() {
            SqliteError::InvalidUrl { url: got, reason } => {
                assert_eq!(got, url);
                reason
            }
            other => panic!("{url}: unexpected {other:?}"),
        }
    }

    #[test]
    fn file_urls_keep_relative_and_absolute_paths() {
        assert_eq!(path_of("sqlite://pool.db"), PathBuf::from("pool.db"));
        assert_eq!(
            path_of("sqlite://path/to/pool.db"),
            PathBuf::from("path/to/pool.db")
        );
        assert_eq!(
            path_of("sqlite:///var/lib/pool.db"),
            PathBuf::from("/var/lib/pool.db")
        );
        assert_eq!(path_of("sqlite://./x.db"), PathBuf::from("./x.db"));
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            path_of("sqlite:///tmp/my%20pool.db"),
            PathBuf::from("/tmp/my pool.db")
        );
        assert_eq!(path_of("sqlite://a%2fb.db"), PathBuf::from("a/b.db"));
        assert_eq!(reason_of("sqlite://a%2.db"), "a %XX escape is malformed");
        assert_eq!(reason_of("sqlite://a%zz.db"), "a %XX escape is malformed");
        assert_eq!(reason_of("sqlite://a%ff.db"), "a %XX escape is malformed");
        assert_eq!(reason_of("sqlite://a%"), "a %XX escape is malformed");
    }

    #[test]
    fn memory_has_one_spelling() {
        let c = SqliteConfig::from_url("sqlite::memory:").unwrap();
        assert_eq!(c.location, Location::Memory);
        assert_eq!(c.location.to_string(), "sqlite::memory:");
        assert!(reason_of("sqlite://:memory:").contains("sqlite::memory:"));
    }

    #[test]
    fn other_forms_are_refused_with_a_reason() {
        assert_eq!(reason_of("s3://bucket/pool"), "the scheme is not sqlite");
        assert_eq!(reason_of("pool.db"), "the scheme is not sqlite");
        assert_eq!(
            reason_of("sqlite:pool.db"),
            "expected sqlite://PATH or sqlite::memory:"
        );
        assert_eq!(reason_of("sqlite://"), "no file path follows sqlite://");
        assert_eq!(
            reason_of("sqlite://dir/"),
            "the path names a directory, not a file"
        );
        assert!(reason_of("sqlite://p.db?mode=ro").starts_with("query strings"));
        assert!(reason_of("sqlite://p.db#x").starts_with("query strings"));
    }

    #[test]
    fn defaults_are_durable_and_checked() {
        let c = SqliteConfig::file("p.db");
        assert_eq!(c.durability, Durability::Full);
        assert!(c.verify_on_open);
        assert!(c.busy_deadline > c.busy_timeout);
    }
}
