//! Store URLs parse into the right configuration or a typed error, and no secret shows
//! in `Debug` output or in logs.

mod common;

use std::sync::{Arc, Mutex};

use pool_s3::{ConfigError, S3Config, S3Credentials, S3Store};
use pool_storage::{ErrorKind, MetadataStore, PoolStore, PoolWrite, Precondition, Revision};

#[test]
fn a_bare_bucket_url_uses_aws_defaults() {
    let config = S3Config::from_url("s3://pool-bucket").expect("valid");
    assert_eq!((config.bucket(), config.prefix()), ("pool-bucket", ""));
    assert_eq!((config.endpoint(), config.region()), (None, "us-east-1"));
    assert!(!config.path_style());
    assert_eq!(config.credentials(), &S3Credentials::Missing);
    assert_eq!(config.location(), "s3://pool-bucket");
}

#[test]
fn prefix_and_options_come_from_the_url() {
    let url = "s3://pool-bucket//team/a/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1";
    let config = S3Config::from_url(url).expect("valid");
    assert_eq!(config.prefix(), "team/a");
    assert_eq!(config.endpoint(), Some("http://127.0.0.1:9000"));
    assert_eq!(config.region(), "eu-west-1");
    assert!(
        config.path_style(),
        "a custom endpoint defaults to path style"
    );
    assert_eq!(config.location(), "s3://pool-bucket/team/a");
    let virtual_host = S3Config::from_url(&format!("{url}&path_style=false")).expect("valid");
    assert!(!virtual_host.path_style());
    let raw = S3Config::from_url("S3://b-1/p?endpoint=https://s3.example.test").expect("valid");
    assert_eq!(raw.endpoint(), Some("https://s3.example.test"));
}

#[test]
fn bad_urls_are_typed_errors() {
    let err = |url: &str| S3Config::from_url(url).expect_err(url);
    assert_eq!(
        err("azure://c/p"),
        ConfigError::NotS3Url {
            scheme: Some("azure".into())
        }
    );
    assert_eq!(err("pool-bucket/p"), ConfigError::NotS3Url { scheme: None });
    assert!(matches!(
        err("s3://Pool_Bucket"),
        ConfigError::InvalidBucket { .. }
    ));
    assert!(matches!(err("s3://ab"), ConfigError::InvalidBucket { .. }));
    assert!(matches!(
        err("s3:///prefix"),
        ConfigError::InvalidBucket { .. }
    ));
    assert!(matches!(
        err("s3://bucket/a//b"),
        ConfigError::InvalidPrefix { .. }
    ));
    assert!(matches!(
        err("s3://bucket/a/../b"),
        ConfigError::InvalidPrefix { .. }
    ));
    assert_eq!(
        err("s3://bucket?colour=red"),
        ConfigError::UnknownOption {
            name: "colour".into()
        }
    );
    assert!(matches!(
        err("s3://bucket?path_style=yes"),
        ConfigError::InvalidOption { .. }
    ));
    assert!(matches!(
        err("s3://bucket?endpoint=ftp://h"),
        ConfigError::InvalidOption { .. }
    ));
    assert!(matches!(
        err("s3://bucket?region=US_EAST"),
        ConfigError::InvalidOption { .. }
    ));
    assert_eq!(err("s3://bucket?endpoint=%zz"), ConfigError::BadEscape);
}

#[test]
fn credentials_in_the_url_are_refused_without_echoing_them() {
    for url in [
        "s3://AKID:hunter2-secret@bucket/p",
        "s3://bucket?secret_key=hunter2-secret",
    ] {
        let err = S3Config::from_url(url).expect_err(url);
        assert_eq!(err, ConfigError::CredentialsInUrl);
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    }
    let err = S3Config::from_url("https://AKID:hunter2@host/b").expect_err("not s3");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
}

#[tokio::test]
async fn connecting_without_credentials_is_refused() {
    let config = S3Config::from_url("s3://pool-bucket?endpoint=http://127.0.0.1:9").expect("ok");
    let err = S3Store::connect(&config).await.expect_err("no credentials");
    assert_eq!(err, ConfigError::MissingCredentials);
}

const SECRET: &str = "Zm9vYmFyLXNlY3JldC1rZXktdGhhdC1tdXN0LW5vdC1sZWFr";
const TOKEN: &str = "c2Vzc2lvbi10b2tlbi10aGF0LW11c3Qtbm90LWxlYWs";

fn with_secrets(config: S3Config) -> S3Config {
    config
        .with_static_credentials("AKIDPOOLTEST", SECRET)
        .with_session_token(TOKEN)
}

fn assert_no_secret(text: &str, what: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the secret key: {text}"
    );
    assert!(
        !text.contains(TOKEN),
        "{what} shows the session token: {text}"
    );
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let config = S3Config::from_url("s3://pool-bucket/p?endpoint=http://127.0.0.1:9").expect("ok");
    let config = with_secrets(config);
    let shown = format!("{config:?}");
    assert_no_secret(&shown, "S3Config");
    assert!(
        shown.contains("AKIDPOOLTEST") && shown.contains("<redacted>"),
        "{shown}"
    );
    let store = S3Store::connect(&config).await.expect("connect");
    assert_no_secret(&format!("{store:?}"), "S3Store");
    assert_no_secret(&format!("{:?}", store.client()), "the SDK client");
    assert_no_secret(&format!("{:?}", config.credentials()), "S3Credentials");
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_of_every_operation_show_no_secret() {
    let Some(emulator) = common::emulator() else {
        return;
    };
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = S3Store::connect(&with_secrets(emulator.config(&common::random_prefix())))
        .await
        .expect("connect");
    store.ensure_bucket().await.expect("bucket");
    let write = PoolWrite::Full(pool_core::Pool::new().snapshot());
    store
        .save(&write, &Precondition::CreateOnly)
        .await
        .expect("create");
    let stale = Precondition::Matches(Revision::new("\"0\""));
    assert_eq!(
        store.save(&write, &stale).await.expect_err("stale").kind(),
        ErrorKind::Conflict
    );
    store.load().await.expect("load").expect("stored");
    let id = pool_core::ProjectId::new("p-1-00000").expect("valid");
    store
        .put_metadata(&id, &serde_json::json!({"k": "v"}), None)
        .await
        .expect("put");
    store.delete_metadata(&id).await.expect("delete");

    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    assert!(
        text.contains("AKIDPOOLTEST"),
        "the capture saw the signed requests: {text}"
    );
    assert_no_secret(&text, "the trace log");
}
