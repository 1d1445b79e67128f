//! Azure Blob Storage backend for the project pool.
//!
//! [`AzureStore`] implements both storage traits of `pool-storage` over one blob container:
//! the pool snapshot is `{prefix}/project_pool.json`, each project's metadata is
//! `{prefix}/{project_id}/project_metadata.json`, and a revision is the blob's ETag. Several
//! manager processes can share one container: every write is conditional
//! (`If-None-Match: *` to create, `If-Match: <etag>` to replace), and a refused write is
//! `ErrorKind::Conflict`, whether Azure answered 409 or 412.
//!
//! The decision a reader may question: every document, however large, goes up in a single
//! Put Blob request rather than the SDK's parallel block upload. The precondition and the
//! content then land in one atomic step, a retry repeats exactly one request, and a save
//! costs one round trip. Put Blob takes far larger bodies than any pool document
//! ([`MAX_DOCUMENT_BYTES`] is the limit enforced here).
//!
//! Requests go through the official Azure SDK for Rust (`azure_storage_blob`), with its
//! retries turned off in favour of this crate's: every attempt has a timeout, and 429, 5xx,
//! connection failures and timeouts are retried with capped exponential backoff. A write
//! whose earlier attempt may have been stored (a timeout, a 5xx) and whose retry is then
//! refused checks the blob's write id, so its own earlier success is not reported as a
//! conflict.
//!
//! Credentials ([`Credential`]): Entra ID (the default: workload identity or managed
//! identity), any token credential, a SAS given by the user, or the account key, from
//! which the store signs short-lived account SAS tokens itself and renews them. Neither
//! `Debug` nor logs nor errors show a key or a SAS signature.
//!
//! The crate has no features.
//!
//! ```
//! use pool_azure::{AzureConfig, AzureStore, EMULATOR_ACCOUNT};
//! use pool_storage::PoolStore;
//!
//! let config = AzureConfig::from_url("azure://devstoreaccount1/pools/team-a")?
//!     .with_emulator(Some("http://127.0.0.1:10000/devstoreaccount1"))?;
//! assert_eq!(config.account(), EMULATOR_ACCOUNT);
//! assert_eq!(config.to_string(), "azure://devstoreaccount1/pools/team-a");
//! assert!(format!("{config:?}").contains("AccountKey(<redacted>)"));
//!
//! // Opening a store sends nothing; the first load or save does.
//! let store = AzureStore::new(config)?;
//! assert_eq!(store.pool_blob(), "team-a/project_pool.json");
//! assert!(!store.capabilities().incremental_saves);
//! # Ok::<(), pool_azure::ConfigError>(())
//! ```

mod config;
mod error;
mod policy;
mod retry;
mod sas;
mod store;

pub use config::{
    AzureConfig, Credential, EMULATOR_ACCOUNT, EMULATOR_ENDPOINT, EMULATOR_KEY, RetryConfig,
    URL_SCHEME,
};
pub use error::ConfigError;
pub use store::{AzureStore, MAX_DOCUMENT_BYTES};
