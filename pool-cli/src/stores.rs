//! Choosing a backend from a store URL.
//!
//! | URL | backend | feature |
//! | --- | --- | --- |
//! | `sqlite://PATH`, `sqlite::memory:` | embedded SQLite | `sqlite` (default) |
//! | `azure://ACCOUNT/CONTAINER[/PREFIX]` | Azure Blob Storage | `azure` |
//! | `s3://BUCKET[/PREFIX]` | S3 or an S3-compatible server | `s3` |
//! | `memory://` | process memory (lost on exit; for trying things out) | always |
//!
//! Endpoints and credentials are options beside the URL ([`StoreArgs`]), never part of it,
//! so a store URL can be logged and printed. Backends behind features that were not
//! compiled in are named in the error, so a user learns which feature to enable; their
//! options exist only in builds that have the backend.

mod azure;
mod s3;

use std::fmt;
use std::sync::Arc;

use anyhow::bail;
use pool_storage::{MemoryStore, MetadataStore, PoolStore};

pub use azure::AzureArgs;
pub use s3::S3Args;

/// The default store: a SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "sqlite://./pool.db";

/// Backend options that do not fit in a URL (endpoints, credentials).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Where the pool is stored: sqlite://PATH, sqlite::memory:, memory://, and with their
    /// features azure://ACCOUNT/CONTAINER[/PREFIX] and s3://BUCKET[/PREFIX]
    /// [default: sqlite://./pool.db]
    #[arg(long, env = "POOL_STORE")]
    pub store: Option<String>,
    /// Azure Blob Storage options (only in builds with the `azure` feature).
    #[command(flatten)]
    pub azure: AzureArgs,
    /// S3 options (only in builds with the `s3` feature).
    #[command(flatten)]
    pub s3: S3Args,
}

/// A secret option value (key, SAS, secret key): `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for handing to a backend.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A pool store and a metadata store on one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where the pool is stored.
    pub pool: Arc<dyn PoolStore>,
    /// Where project metadata is stored.
    pub metadata: Arc<dyn MetadataStore>,
}

impl Backend {
    fn shared<S: PoolStore + MetadataStore + 'static>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            pool: store.clone(),
            metadata: store,
        }
    }
}

impl StoreArgs {
    /// The store URL, or the default.
    pub fn url(&self) -> &str {
        self.store.as_deref().unwrap_or(DEFAULT_STORE)
    }

    /// Fills the backend options not given by flag or environment from a `pool serve`
    /// config file, taking their keys (`azure_key`, `s3_region`, ...) out of `table` so the
    /// rest can be read strictly. A backend key in a build without that backend is an
    /// error naming the feature.
    pub fn fill_from_file(&mut self, table: &mut toml::Table) -> anyhow::Result<()> {
        self.azure.fill_from_file(table)?;
        self.s3.fill_from_file(table)
    }
}

/// Opens the backend `url` names.
pub async fn open(url: &str, args: &StoreArgs) -> anyhow::Result<Backend> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => Ok(Backend::shared(MemoryStore::new())),
        "sqlite" => open_sqlite(url).await,
        "azure" => azure::open(url, &args.azure).await,
        "s3" => s3::open(url, &args.s3).await,
        _ => bail!(
            "store URL {:?} names no known backend (sqlite://, memory://, azure://, s3://)",
            shown(url)
        ),
    }
}

/// `url` without anything that might carry a secret (a user part, a query, a fragment),
/// for error messages.
fn shown(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            let rest = match rest[..host_end].rfind('@') {
                Some(at) => &rest[at + 1..],
                None => rest,
            };
            format!("{scheme}://{rest}")
        }
        None => url.to_owned(),
    }
}

/// Takes the string `key` out of a config file table.
#[cfg(any(feature = "azure", feature = "s3"))]
fn take_string(table: &mut toml::Table, key: &str) -> anyhow::Result<Option<String>> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => bail!("{key} must be a string, not a {}", other.type_str()),
    }
}

/// Takes the boolean `key` out of a config file table.
#[cfg(any(feature = "azure", feature = "s3"))]
fn take_bool(table: &mut toml::Table, key: &str) -> anyhow::Result<Option<bool>> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::Boolean(b)) => Ok(Some(b)),
        Some(other) => bail!("{key} must be true or false, not a {}", other.type_str()),
    }
}

/// Refuses the config file keys of a backend this build does not have.
#[cfg(not(all(feature = "azure", feature = "s3")))]
fn refuse_keys(table: &toml::Table, keys: &[&str], feature: &str) -> anyhow::Result<()> {
    match keys.iter().find(|k| table.contains_key(**k)) {
        Some(key) => bail!("{key} needs a build with the `{feature}` feature"),
        None => Ok(()),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> anyhow::Result<Backend> {
    use anyhow::Context;

    let config =
        pool_sqlite::SqliteConfig::from_url(url).with_context(|| format!("store {url}"))?;
    let store = pool_sqlite::SqliteStore::open(config)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(Backend::shared(store))
}

/// The file a `sqlite://` URL names, if it does not exist (opening would create it).
#[cfg(feature = "sqlite")]
pub fn missing_database(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    match pool_sqlite::SqliteConfig::from_url(url).ok()?.location {
        pool_sqlite::Location::File(path) if !path.exists() => Some(path),
        _ => None,
    }
}

/// Without the SQLite backend no URL names a database file.
#[cfg(not(feature = "sqlite"))]
pub fn missing_database(_url: &str) -> Option<std::path::PathBuf> {
    None
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(url: &str) -> anyhow::Result<Backend> {
    bail!("store {url}: this build has no SQLite backend (enable the `sqlite` feature)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_drop_user_query_and_fragment() {
        assert_eq!(shown("azure://acct/c/p"), "azure://acct/c/p");
        assert_eq!(shown("s3://b/p?endpoint=x&secret=y"), "s3://b/p");
        assert_eq!(shown("azure://key:s3cret@acct/c"), "azure://acct/c");
        assert_eq!(shown("ftp://h/a@b#frag"), "ftp://h/a@b");
        assert_eq!(shown("no scheme?x"), "no scheme");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let args = Secret::from("hunter2".to_owned());
        assert_eq!(format!("{args:?}"), "<redacted>");
        assert_eq!(args.expose(), "hunter2");
    }

    #[cfg(any(feature = "azure", feature = "s3"))]
    #[test]
    fn file_values_must_have_the_right_type() {
        let mut table: toml::Table = toml::from_str("a = 1\nb = \"x\"\nc = true").unwrap();
        assert!(
            take_string(&mut table, "a")
                .unwrap_err()
                .to_string()
                .contains("string")
        );
        assert_eq!(take_string(&mut table, "b").unwrap().as_deref(), Some("x"));
        assert_eq!(take_bool(&mut table, "c").unwrap(), Some(true));
        assert_eq!(take_bool(&mut table, "d").unwrap(), None);
        assert!(table.is_empty());
    }

    #[test]
    fn memory_and_unknown_schemes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let args = StoreArgs::default();
        assert!(rt.block_on(open("memory://", &args)).is_ok());
        let err = rt.block_on(open("ftp://u:pw@h/x?k=v", &args)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("names no known backend"), "{text}");
        assert!(!text.contains("pw") && !text.contains("k=v"), "{text}");
    }
}
