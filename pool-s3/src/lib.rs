//! The S3 backend of the project pool: the pool document and each project's metadata as
//! objects in a bucket, every write conditional on the ETag the writer last saw.
//!
//! [`S3Store`] implements both [`PoolStore`](pool_storage::PoolStore) and
//! [`MetadataStore`](pool_storage::MetadataStore) over `{prefix}/project_pool.json` and
//! `{prefix}/{project_id}/project_metadata.json`. A create is a PUT with
//! `If-None-Match: *`, an update a PUT with `If-Match: <etag>`; a refused precondition
//! (412) or a lost race between two conditional writes (409) is
//! [`ErrorKind::Conflict`](pool_storage::ErrorKind::Conflict). Saves and loads are one
//! request each; only whole snapshots are stored.
//!
//! The decision a reader may question: the revision is the ETag, and a plain PUT's ETag is
//! the MD5 of the body, so two writes of identical bytes share a revision. That is safe
//! because every pool snapshot carries its pool version, which rises with each change, so
//! no two versions are byte-identical. The same property settles the one ambiguous case of
//! a retried conditional write: when an attempt was stored but its answer was lost, the
//! retry fails its own precondition, and the store accepts it as a success only if the
//! stored ETag is the MD5 of what it sent.
//!
//! Requests are retried with jittered exponential backoff on throttling, 5xx answers,
//! dropped connections and timed-out attempts ([`RetrySettings`], [`Timeouts`]). Errors
//! name the bucket and key. Credentials come from the configuration; `Debug` output of the
//! configuration and the store never shows a secret.
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `credential-chain` | `S3Config::with_credential_chain`: the standard AWS chain (aws-config) |
//!
//! The chain reads the environment and profile files and may ask the container and
//! instance metadata services, so it is off by default and, even when compiled in, used
//! only when asked for: by default credentials are the static keys in the configuration.
//!
//! ```
//! use pool_s3::S3Config;
//!
//! let config = S3Config::from_url("s3://pools/prod?endpoint=http://127.0.0.1:9000")?
//!     .with_static_credentials("AKIDEXAMPLE", "not-shown-by-debug");
//! assert_eq!(config.location(), "s3://pools/prod");
//! assert!(config.path_style(), "a custom endpoint defaults to path-style addressing");
//! assert!(!format!("{config:?}").contains("not-shown-by-debug"));
//! # Ok::<(), pool_s3::ConfigError>(())
//! ```
//!
//! Connecting and saving, against a local S3 server:
//!
//! ```no_run
//! use pool_core::Pool;
//! use pool_s3::{S3Config, S3Store};
//! use pool_storage::{PoolStore, PoolWrite, Precondition};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = S3Config::from_url("s3://pools/prod?endpoint=http://127.0.0.1:9000")?
//!     .with_static_credentials("testing", "testing");
//! let store = S3Store::connect(&config).await?;
//! store.ensure_bucket().await?;
//! let write = PoolWrite::Full(Pool::new().snapshot());
//! let revision = store.save(&write, &Precondition::CreateOnly).await?;
//! println!("stored at ETag {revision}");
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod store;

pub use config::{
    DEFAULT_REGION, RetrySettings, S3Config, S3Credentials, SCHEME, Secret, Timeouts,
};
pub use error::ConfigError;
pub use store::S3Store;
