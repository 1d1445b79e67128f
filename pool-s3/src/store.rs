//! [`S3Store`]: both storage traits over one bucket and prefix.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;
use md5::{Digest, Md5};
use pool_core::{PoolSnapshot, ProjectId};
use pool_storage::{
    Capabilities, ErrorKind, Metadata, MetadataStore, PoolStore, PoolWrite, Precondition, Revision,
    StoreError, Versioned, decode_metadata, decode_pool, metadata_key, pool_key,
};
use tracing::{debug, info, warn};

use crate::config::{DEFAULT_REGION, S3Config, S3Credentials};
use crate::error::{BACKEND, ConfigError, already_ours, if_match_error, store_error};

/// The largest object a single S3 PUT stores.
const MAX_PUT_BYTES: usize = 5 << 30;

/// A pool and metadata store in an S3 bucket.
///
/// The pool is `{prefix}/project_pool.json`; a project's metadata is
/// `{prefix}/{project_id}/project_metadata.json`. Revisions are ETags. Clones share one
/// client and one request counter.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    config: S3Config,
    requests: Arc<AtomicU64>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.config.location())
            .field("endpoint", &self.config.endpoint())
            .field("region", &self.config.region())
            .field("path_style", &self.config.path_style())
            .field("requests_sent", &self.requests_sent())
            .finish()
    }
}

impl S3Store {
    /// Builds a client for `config`. Nothing is sent until the first operation; with the
    /// credential chain, setting the chain up may read local files and the environment.
    pub async fn connect(config: &S3Config) -> Result<Self, ConfigError> {
        let credentials = credentials_provider(config).await?;
        let requests = Arc::new(AtomicU64::new(0));
        let timeouts = config.timeouts();
        let retry = config.retry();
        let mut sdk = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region().to_owned()))
            .force_path_style(config.path_style())
            .credentials_provider(credentials)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(retry.max_attempts.max(1))
                    .with_initial_backoff(retry.initial_backoff)
                    .with_max_backoff(retry.max_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .operation_attempt_timeout(timeouts.attempt)
                    .operation_timeout(timeouts.operation)
                    .build(),
            )
            .interceptor(CountRequests(requests.clone()));
        if let Some(endpoint) = config.endpoint() {
            sdk = sdk.endpoint_url(endpoint);
        }
        let client = Client::from_conf(sdk.build());
        Ok(Self {
            client,
            config: config.clone(),
            requests,
        })
    }

    /// The SDK client, for operations this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration the store was built from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The key of the pool document.
    pub fn pool_key(&self) -> String {
        pool_key(self.config.prefix())
    }

    /// The key of `project`'s metadata document.
    pub fn metadata_key(&self, project: &ProjectId) -> String {
        metadata_key(self.config.prefix(), project)
    }

    /// HTTP requests sent so far by this store and its clones, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Creates the bucket unless it exists already; safe to call from several processes.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let bucket = self.config.bucket();
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(HeadBucketError::is_not_found) => {}
            Err(e) => return Err(store_error(e, format!("checking bucket {bucket}"))),
        }
        let mut create = self.client.create_bucket().bucket(bucket);
        if self.config.region() != DEFAULT_REGION {
            let region = BucketLocationConstraint::from(self.config.region());
            let location = CreateBucketConfiguration::builder().location_constraint(region);
            create = create.create_bucket_configuration(location.build());
        }
        match create.send().await {
            Ok(_) => {
                info!(bucket, region = self.config.region(), "created bucket");
                Ok(())
            }
            Err(e) if already_ours(&e) => Ok(()),
            Err(e) => Err(store_error(e, format!("creating bucket {bucket}"))),
        }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.config.bucket())
    }

    /// Reads an object and its ETag; `None` if there is no such key.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, Revision)>, StoreError> {
        let sent = self
            .client
            .get_object()
            .bucket(self.config.bucket())
            .key(key)
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetObjectError::is_no_such_key) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(store_error(e, format!("reading {}", self.url(key)))),
        };
        let revision = self.etag(out.e_tag(), "reading", key)?;
        let body = out.body.collect().await.map_err(|e| {
            let context = format!("reading the body of {}", self.url(key));
            StoreError::new(ErrorKind::Unavailable, BACKEND, context).with_source(e)
        })?;
        Ok(Some((body.into_bytes(), revision)))
    }

    /// Writes an object if `precondition` holds (always with `None`); returns its ETag.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        precondition: Option<&Precondition>,
    ) -> Result<Revision, StoreError> {
        if body.len() > MAX_PUT_BYTES {
            let context = format!("writing {} bytes to {}", body.len(), self.url(key));
            return Err(StoreError::new(ErrorKind::InvalidInput, BACKEND, context));
        }
        let mut request = self
            .client
            .put_object()
            .bucket(self.config.bucket())
            .key(key);
        request = request
            .content_type("application/json")
            .body(ByteStream::from(body.clone()));
        request = match precondition {
            Some(Precondition::CreateOnly) => request.if_none_match("*"),
            Some(Precondition::Matches(revision)) => request.if_match(revision.as_str()),
            None => request,
        };
        let attempts = Arc::new(AtomicU64::new(0));
        let sent = request
            .customize()
            .interceptor(CountRequests(attempts.clone()))
            .send()
            .await;
        let err = match sent {
            Ok(out) => return self.etag(out.e_tag(), "writing", key),
            Err(e) => {
                let context = format!("writing {} ({})", self.url(key), expected(precondition));
                match precondition {
                    Some(Precondition::Matches(_)) => if_match_error(e, context),
                    _ => store_error(e, context),
                }
            }
        };
        if err.is_conflict() && attempts.load(Ordering::Relaxed) > 1 {
            return self.own_write_or(key, &body, err).await;
        }
        Err(err)
    }

    /// Settles a conflict reported on a retried write. When an earlier attempt was stored
    /// but its answer was lost, the retry finds its own write and fails its precondition.
    /// A plain PUT's ETag is the MD5 of the body, so if the stored ETag is the MD5 of what
    /// this write sent, the write is in place and succeeded.
    async fn own_write_or(
        &self,
        key: &str,
        body: &[u8],
        conflict: StoreError,
    ) -> Result<Revision, StoreError> {
        let Some(stored) = self.head_etag(key).await? else {
            return Err(conflict);
        };
        if unquoted(stored.as_str()).eq_ignore_ascii_case(&md5_hex(body)) {
            warn!(
                key,
                etag = stored.as_str(),
                "retried write found its own earlier attempt stored"
            );
            return Ok(stored);
        }
        Err(conflict)
    }

    async fn head_etag(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        let sent = self
            .client
            .head_object()
            .bucket(self.config.bucket())
            .key(key)
            .send()
            .await;
        match sent {
            Ok(out) => self.etag(out.e_tag(), "checking", key).map(Some),
            Err(e)
                if e.as_service_error()
                    .is_some_and(HeadObjectError::is_not_found) =>
            {
                Ok(None)
            }
            Err(e) => Err(store_error(e, format!("checking {}", self.url(key)))),
        }
    }

    fn etag(&self, etag: Option<&str>, doing: &str, key: &str) -> Result<Revision, StoreError> {
        let Some(etag) = etag.filter(|e| !e.is_empty()) else {
            let context = format!("{doing} {}: the answer carried no ETag", self.url(key));
            return Err(StoreError::new(ErrorKind::Other, BACKEND, context));
        };
        Ok(Revision::new(etag))
    }
}

async fn credentials_provider(config: &S3Config) -> Result<SharedCredentialsProvider, ConfigError> {
    match config.credentials() {
        S3Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            let token = session_token.as_ref().map(|t| t.expose().to_owned());
            let secret = secret_access_key.expose().to_owned();
            let credentials = Credentials::new(access_key_id, secret, token, None, "pool-s3");
            Ok(SharedCredentialsProvider::new(credentials))
        }
        #[cfg(feature = "credential-chain")]
        S3Credentials::Chain => {
            let region = Region::new(config.region().to_owned());
            let chain =
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(region)
                    .build()
                    .await;
            Ok(SharedCredentialsProvider::new(chain))
        }
        S3Credentials::Missing => Err(ConfigError::MissingCredentials),
    }
}

fn expected(precondition: Option<&Precondition>) -> String {
    match precondition {
        Some(Precondition::CreateOnly) => "only if absent".to_owned(),
        Some(Precondition::Matches(revision)) => format!("only over ETag {revision}"),
        None => "unconditionally".to_owned(),
    }
}

fn unquoted(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn md5_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Counts every HTTP request the client transmits, retries included.
#[derive(Debug)]
struct CountRequests(Arc<AtomicU64>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl PoolStore for S3Store {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: BACKEND,
            incremental_saves: false,
            shared_between_processes: true,
            max_document_bytes: Some(MAX_PUT_BYTES),
        }
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        let key = self.pool_key();
        let Some((bytes, revision)) = self.get(&key).await? else {
            return Ok(None);
        };
        let value = decode_pool(BACKEND, &self.url(&key), &bytes)?;
        Ok(Some(Versioned { value, revision }))
    }

    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        let key = self.pool_key();
        let PoolWrite::Full(snapshot) = write else {
            let context = format!("saving changes to {}: only whole snapshots", self.url(&key));
            return Err(StoreError::new(ErrorKind::Unsupported, BACKEND, context));
        };
        let body = Bytes::from(snapshot.to_json());
        let bytes = body.len();
        let revision = self.put(&key, body, Some(precondition)).await?;
        let projects = snapshot.projects.len();
        debug!(
            key,
            projects,
            pool_version = snapshot.pool_version,
            bytes,
            "saved pool state"
        );
        Ok(revision)
    }
}

#[async_trait]
impl MetadataStore for S3Store {
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError> {
        let key = self.metadata_key(project);
        let Some((bytes, revision)) = self.get(&key).await? else {
            return Ok(None);
        };
        let value = decode_metadata(BACKEND, &self.url(&key), &bytes)?;
        Ok(Some(Versioned { value, revision }))
    }

    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError> {
        let key = self.metadata_key(project);
        let body = serde_json::to_vec(metadata).map_err(|e| {
            let context = format!("encoding metadata for {}", self.url(&key));
            StoreError::new(ErrorKind::InvalidInput, BACKEND, context).with_source(e)
        })?;
        self.put(&key, Bytes::from(body), precondition.as_ref())
            .await
    }

    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError> {
        let key = self.metadata_key(project);
        let sent = self
            .client
            .delete_object()
            .bucket(self.config.bucket())
            .key(&key)
            .send()
            .await;
        sent.map(drop)
            .map_err(|e| store_error(e, format!("deleting {}", self.url(&key))))
    }

    fn metadata_location(&self, project: &ProjectId) -> String {
        self.url(&self.metadata_key(project))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_etag_s3_gives_a_plain_put() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            unquoted("\"D41D8CD98F00B204E9800998ECF8427E\""),
            "D41D8CD98F00B204E9800998ECF8427E"
        );
    }
}
