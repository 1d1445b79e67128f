//! Choosing a backend from a store URL.
//!
//! | URL | backend | feature |
//! | --- | --- | --- |
//! | `sqlite://PATH`, `sqlite::memory:` | embedded SQLite | `sqlite` (default) |
//! | `memory://` | process memory (lost on exit; for trying things out) | always |
//!
//! Backends behind features that were not compiled in are named in the error, so a user
//! learns which feature to enable.

use std::sync::Arc;

use anyhow::{Context, bail};
use pool_storage::{MemoryStore, MetadataStore, PoolStore};

/// The default store: a SQLite file in the working directory.
pub const DEFAULT_STORE: &str = "sqlite://./pool.db";

/// Backend options that do not fit in a URL (endpoints, credentials).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Where the pool is stored: sqlite://PATH, sqlite::memory:, memory://
    /// [default: sqlite://./pool.db]
    #[arg(long, env = "POOL_STORE")]
    pub store: Option<String>,
}

/// A pool store and a metadata store on one backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where the pool is stored.
    pub pool: Arc<dyn PoolStore>,
    /// Where project metadata is stored.
    pub metadata: Arc<dyn MetadataStore>,
}

impl StoreArgs {
    /// The store URL, or the default.
    pub fn url(&self) -> &str {
        self.store.as_deref().unwrap_or(DEFAULT_STORE)
    }
}

/// Opens the backend `url` names.
pub async fn open(url: &str, args: &StoreArgs) -> anyhow::Result<Backend> {
    let _ = args;
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "memory" => {
            let m = MemoryStore::new();
            Ok(Backend {
                pool: Arc::new(m.clone()),
                metadata: Arc::new(m),
            })
        }
        "sqlite" => open_sqlite(url).await,
        "azure" => {
            bail!("store {url}: this build has no Azure backend (enable the `azure` feature)")
        }
        "s3" => bail!("store {url}: this build has no S3 backend (enable the `s3` feature)"),
        _ => bail!(
            "store URL {url:?} names no known backend (sqlite://, memory://, azure://, s3://)"
        ),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> anyhow::Result<Backend> {
    let config =
        pool_sqlite::SqliteConfig::from_url(url).with_context(|| format!("store {url}"))?;
    let store = Arc::new(
        pool_sqlite::SqliteStore::open(config)
            .await
            .with_context(|| format!("opening {url}"))?,
    );
    Ok(Backend {
        pool: store.clone(),
        metadata: store,
    })
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(url: &str) -> anyhow::Result<Backend> {
    bail!("store {url}: this build has no SQLite backend (enable the `sqlite` feature)")
}
