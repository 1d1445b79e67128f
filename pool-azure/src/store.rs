//! [`AzureStore`]: both storage traits over one blob container.

use std::num::NonZero;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Etag, NoFormat, RequestContent, RetryOptions};
use azure_core::{Bytes, Uuid};
use azure_identity::{ManagedIdentityCredential, WorkloadIdentityCredential};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use pool_core::{PoolSnapshot, ProjectId};
use pool_storage::{
    Capabilities, ErrorKind, Metadata, MetadataStore, PoolStore, PoolWrite, Precondition, Revision,
    StoreError, Versioned, decode_metadata, decode_pool, metadata_key, pool_key,
};

use crate::config::{AzureConfig, Credential};
use crate::error::{BACKEND, ConfigError, Failure, redact_signatures};
use crate::policy::{RequestPolicy, SasSource, parse_sas};
use crate::retry::{self, Exhausted};
use crate::sas::AccountSasSigner;

/// The largest document stored. Every document goes up in one Put Blob request, so its
/// precondition and its content are one atomic step; the service accepts far more in one
/// request, but a pool document this large is a mistake worth refusing.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 20;

/// The blob metadata entry naming the write that stored a blob, to recognise our own
/// earlier attempt after a retry.
const WRITE_ID: &str = "poolwriteid";

/// A pool store and metadata store in an Azure Blob container.
///
/// The pool is the blob `{prefix}/project_pool.json`; each project's metadata is
/// `{prefix}/{project_id}/project_metadata.json`. Revisions are the blobs' ETags, and every
/// write is a single Put Blob carrying `If-None-Match: *` or `If-Match: <etag>`, so it is
/// atomic and conditional at any size up to [`MAX_DOCUMENT_BYTES`]. Clones share one HTTP
/// client and one request counter.
#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: AzureConfig,
    container: BlobContainerClient,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("config", &self.inner.config)
            .field("requests_sent", &self.requests_sent())
            .finish()
    }
}

impl AzureStore {
    /// Opens a store; sends nothing until the first operation.
    pub fn new(config: AzureConfig) -> Result<Self, ConfigError> {
        let url = config.container_url();
        let plain_http = url.scheme() == "http";
        let (token, sas) = credentials(&config, plain_http)?;
        if token.is_some() && plain_http {
            return Err(ConfigError::TokenNeedsHttps {
                scheme: url.scheme().to_owned(),
            });
        }
        let requests = Arc::new(AtomicU64::new(0));
        let policy = Arc::new(RequestPolicy::new(sas, requests.clone()));
        let client_options = ClientOptions {
            retry: RetryOptions::none(),
            per_try_policies: vec![policy],
            ..ClientOptions::default()
        };
        let options = BlobContainerClientOptions {
            client_options,
            ..Default::default()
        };
        let container = BlobContainerClient::new(url, token, Some(options))
            .map_err(|e| ConfigError::Client(redact_signatures(&e.to_string())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                container,
                requests,
            }),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &AzureConfig {
        &self.inner.config
    }

    /// HTTP requests sent so far (every attempt counts), by this store and its clones.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The pool document's blob name in the container.
    pub fn pool_blob(&self) -> String {
        pool_key(self.inner.config.prefix())
    }

    /// A project's metadata blob name in the container.
    pub fn metadata_blob(&self, project: &ProjectId) -> String {
        metadata_key(self.inner.config.prefix(), project)
    }

    /// Creates the container if it does not exist; returns whether it was created.
    pub async fn ensure_container(&self) -> Result<bool, StoreError> {
        let what = format!("creation of container {:?}", self.inner.config.container());
        let container = &self.inner.container;
        let outcome = self
            .retrying(&what, move || async move {
                container
                    .create(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::from_sdk(&e))
            })
            .await;
        match outcome {
            Ok(_) => {
                tracing::info!(
                    container = self.inner.config.container(),
                    "created container"
                );
                Ok(true)
            }
            Err(e) if e.failure.has_code("ContainerAlreadyExists") => Ok(false),
            Err(e) => Err(e.failure.into_store_error(&what, e.attempts)),
        }
    }

    /// Overwrites the blob `blob` (a name in the container, such as [`pool_blob`]) with
    /// raw bytes, whatever is stored; for repair tools and tests that plant documents.
    ///
    /// [`pool_blob`]: Self::pool_blob
    pub async fn write_raw(&self, blob: &str, bytes: Vec<u8>) -> Result<Revision, StoreError> {
        let what = format!("raw write of {}", self.location(blob));
        self.put(blob, bytes.into(), None, &what).await
    }

    fn location(&self, blob: &str) -> String {
        format!(
            "blob {blob:?} in container {:?}",
            self.inner.config.container()
        )
    }

    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<(T, u32), Exhausted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let config = &self.inner.config;
        retry::run(&config.retry(), config.request_timeout(), what, attempt).await
    }

    /// The blob's content and revision, or `None` if it does not exist.
    async fn get(&self, blob: &str) -> Result<Option<(Bytes, Revision)>, StoreError> {
        let what = format!("read of {}", self.location(blob));
        let client = &self.inner.container.blob_client(blob);
        let outcome = self
            .retrying(&what, move || async move { download(client).await })
            .await;
        match outcome {
            Ok(((bytes, etag), _)) => Ok(Some((bytes, Revision::new(etag.to_string())))),
            Err(e) if e.failure.is_blob_not_found() => Ok(None),
            Err(e) => Err(e.failure.into_store_error(&what, e.attempts)),
        }
    }

    /// Stores `body` if `condition` holds (always, without one); returns the new revision.
    async fn put(
        &self,
        blob: &str,
        body: Bytes,
        condition: Option<&Precondition>,
        what: &str,
    ) -> Result<Revision, StoreError> {
        if body.len() > MAX_DOCUMENT_BYTES {
            let msg = format!("{what}: {} bytes exceed {MAX_DOCUMENT_BYTES}", body.len());
            return Err(StoreError::new(ErrorKind::InvalidInput, BACKEND, msg));
        }
        let write_id = Uuid::new_v4().to_string();
        let options = &upload_options(condition, &write_id, body.len());
        let client = &self.inner.container.blob_client(blob);
        let body = &body;
        let outcome = self
            .retrying(what, move || async move {
                upload(client, body.clone(), options).await
            })
            .await;
        match outcome {
            Ok((etag, _)) => Ok(Revision::new(etag.to_string())),
            Err(e) if condition.is_some() && e.failure.is_lost_precondition() => {
                self.resolve_lost_precondition(client, &write_id, e, what)
                    .await
            }
            Err(e) => Err(e.failure.into_store_error(what, e.attempts)),
        }
    }

    /// A conditional write was refused. If an earlier attempt may have been stored, the
    /// refusal may be that attempt's own doing: the blob then carries this write's id, and
    /// the write succeeded. Otherwise another writer got there first.
    async fn resolve_lost_precondition(
        &self,
        client: &BlobClient,
        write_id: &str,
        e: Exhausted,
        what: &str,
    ) -> Result<Revision, StoreError> {
        if e.earlier_may_have_applied {
            let check = format!("{what}: check of an earlier attempt");
            let found = self.retrying(&check, move || async move { written_by(client).await });
            if let Ok(((Some(id), Some(etag)), _)) = found.await {
                if id == write_id {
                    tracing::info!(
                        attempts = e.attempts,
                        what,
                        "an earlier attempt of the write was stored"
                    );
                    return Ok(Revision::new(etag.to_string()));
                }
            }
        }
        let msg = format!("{what}: the precondition did not hold");
        Err(StoreError::conflict(BACKEND, msg).with_source(e.failure.to_string()))
    }

    async fn delete(&self, blob: &str) -> Result<(), StoreError> {
        let what = format!("deletion of {}", self.location(blob));
        let client = &self.inner.container.blob_client(blob);
        let outcome = self
            .retrying(&what, move || async move {
                client
                    .delete(None)
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::from_sdk(&e))
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(e) if e.failure.is_blob_not_found() => Ok(()),
            Err(e) => Err(e.failure.into_store_error(&what, e.attempts)),
        }
    }
}

/// The token credential or the SAS source the configuration asks for.
fn credentials(
    config: &AzureConfig,
    plain_http: bool,
) -> Result<(Option<Arc<dyn TokenCredential>>, SasSource), ConfigError> {
    let client_error = |e: azure_core::Error| ConfigError::Client(e.to_string());
    Ok(match config.credential() {
        Credential::Entra if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() => {
            let credential = WorkloadIdentityCredential::new(None).map_err(client_error)?;
            (
                Some(credential as Arc<dyn TokenCredential>),
                SasSource::None,
            )
        }
        Credential::Entra => {
            let credential = ManagedIdentityCredential::new(None).map_err(client_error)?;
            (
                Some(credential as Arc<dyn TokenCredential>),
                SasSource::None,
            )
        }
        Credential::Token(t) => (Some(t.clone()), SasSource::None),
        Credential::Sas(sas) => (None, SasSource::Fixed(parse_sas(sas.secret()))),
        Credential::AccountKey(key) => {
            let lifetime = config.sas_lifetime();
            let signer = AccountSasSigner::new(config.account(), key.clone(), lifetime, plain_http);
            (None, SasSource::Signed(signer))
        }
    })
}

fn upload_options<'a>(
    condition: Option<&Precondition>,
    write_id: &str,
    len: usize,
) -> BlobClientUploadOptions<'a> {
    let (if_match, if_none_match) = match condition {
        None => (None, None),
        Some(Precondition::CreateOnly) => (None, Some(Etag::from("*"))),
        Some(Precondition::Matches(rev)) => (Some(Etag::from(quoted(rev.as_str()))), None),
    };
    let single_request =
        NonZero::new(u64::try_from(len).unwrap_or(u64::MAX)).unwrap_or(NonZero::<u64>::MIN);
    BlobClientUploadOptions {
        if_match,
        if_none_match,
        blob_content_type: Some("application/json".to_owned()),
        metadata: Some([(WRITE_ID.to_owned(), write_id.to_owned())].into()),
        // A partition as large as the body keeps the upload to one Put Blob request.
        partition_size: Some(single_request),
        parallel: Some(NonZero::<usize>::MIN),
        ..Default::default()
    }
}

/// An ETag as `If-Match` expects it: in double quotes.
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

async fn upload(
    client: &BlobClient,
    body: Bytes,
    options: &BlobClientUploadOptions<'_>,
) -> Result<Etag, Failure> {
    let content: RequestContent<Bytes, NoFormat> = body.into();
    let result = client.upload(content, Some(options.clone())).await;
    let result = result.map_err(|e| Failure::from_sdk(&e))?;
    result
        .etag
        .ok_or_else(|| Failure::Other("the service returned no ETag".to_owned()))
}

async fn download(client: &BlobClient) -> Result<(Bytes, Etag), Failure> {
    let options = BlobClientDownloadOptions {
        // One ranged GET covering any document we store; no follow-up range requests.
        partition_size: NonZero::new(MAX_DOCUMENT_BYTES),
        parallel: Some(NonZero::<usize>::MIN),
        ..Default::default()
    };
    let result = client
        .download(Some(options))
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    let etag = result.properties.etag.clone();
    let bytes = result
        .body
        .collect()
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    let etag = etag.ok_or_else(|| Failure::Other("the service returned no ETag".to_owned()))?;
    Ok((bytes, etag))
}

/// The write id and ETag stored on the blob.
async fn written_by(client: &BlobClient) -> Result<(Option<String>, Option<Etag>), Failure> {
    let props = client
        .get_properties(None)
        .await
        .map_err(|e| Failure::from_sdk(&e))?;
    let id = props.metadata().ok().and_then(|mut m| m.remove(WRITE_ID));
    Ok((id, props.etag().ok().flatten()))
}

#[async_trait]
impl PoolStore for AzureStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: BACKEND,
            incremental_saves: false,
            shared_between_processes: true,
            max_document_bytes: Some(MAX_DOCUMENT_BYTES),
        }
    }

    async fn load(&self) -> Result<Option<Versioned<PoolSnapshot>>, StoreError> {
        let blob = self.pool_blob();
        let Some((bytes, revision)) = self.get(&blob).await? else {
            return Ok(None);
        };
        let value = decode_pool(BACKEND, &self.location(&blob), &bytes)?;
        tracing::debug!(
            blob,
            bytes = bytes.len(),
            pool_version = value.pool_version,
            "loaded the pool from Azure Blob storage"
        );
        Ok(Some(Versioned { value, revision }))
    }

    async fn save(
        &self,
        write: &PoolWrite,
        precondition: &Precondition,
    ) -> Result<Revision, StoreError> {
        let PoolWrite::Full(snapshot) = write else {
            let msg = "the azure store saves whole snapshots only, not changes";
            return Err(StoreError::new(ErrorKind::Unsupported, BACKEND, msg));
        };
        let blob = self.pool_blob();
        let body = Bytes::from(snapshot.to_json());
        let bytes = body.len();
        let what = format!(
            "save of pool version {} to {}",
            snapshot.pool_version,
            self.location(&blob)
        );
        let revision = self.put(&blob, body, Some(precondition), &what).await?;
        tracing::debug!(
            blob,
            bytes,
            projects = snapshot.projects.len(),
            pool_version = snapshot.pool_version,
            "saved the pool state to Azure Blob storage"
        );
        Ok(revision)
    }
}

#[async_trait]
impl MetadataStore for AzureStore {
    async fn get_metadata(
        &self,
        project: &ProjectId,
    ) -> Result<Option<Versioned<Metadata>>, StoreError> {
        let blob = self.metadata_blob(project);
        let Some((bytes, revision)) = self.get(&blob).await? else {
            return Ok(None);
        };
        let value = decode_metadata(BACKEND, &self.location(&blob), &bytes)?;
        let project_id = project.as_str();
        tracing::debug!(
            project_id,
            blob,
            "read project metadata from Azure Blob storage"
        );
        Ok(Some(Versioned { value, revision }))
    }

    async fn put_metadata(
        &self,
        project: &ProjectId,
        metadata: &Metadata,
        precondition: Option<Precondition>,
    ) -> Result<Revision, StoreError> {
        let blob = self.metadata_blob(project);
        let what = format!("write of {}", self.location(&blob));
        let body = serde_json::to_vec(metadata).map_err(|e| {
            StoreError::new(ErrorKind::InvalidInput, BACKEND, format!("encoding {what}"))
                .with_source(e)
        })?;
        self.put(&blob, body.into(), precondition.as_ref(), &what)
            .await
    }

    async fn delete_metadata(&self, project: &ProjectId) -> Result<(), StoreError> {
        self.delete(&self.metadata_blob(project)).await
    }

    fn metadata_location(&self, project: &ProjectId) -> String {
        format!(
            "{}/{}",
            self.inner.config.store_url(),
            metadata_key("", project)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_sent_quoted() {
        assert_eq!(quoted("\"0x8D\""), "\"0x8D\"");
        assert_eq!(quoted("not-a-revision"), "\"not-a-revision\"");
    }

    #[test]
    fn uploads_are_one_conditional_request_with_a_write_id() {
        let o = upload_options(Some(&Precondition::CreateOnly), "id-1", 10 << 20);
        assert_eq!(o.if_none_match.map(|e| e.to_string()).as_deref(), Some("*"));
        assert!(o.if_match.is_none());
        assert_eq!(o.partition_size.map(NonZero::get), Some(10 << 20));
        assert_eq!(
            o.metadata.unwrap().get(WRITE_ID).map(String::as_str),
            Some("id-1")
        );
        let rev = Precondition::Matches(Revision::new("\"0x1\""));
        let o = upload_options(Some(&rev), "id-2", 0);
        assert_eq!(
            o.if_match.map(|e| e.to_string()).as_deref(),
            Some("\"0x1\"")
        );
        assert_eq!(o.partition_size.map(NonZero::get), Some(1));
    }
}
