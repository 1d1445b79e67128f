//! Keys and SAS signatures never show in `Debug` output, errors or logs (the SDK's own
//! TRACE events included).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::scripted::{Reply, serve};
use pool_azure::{AzureConfig, AzureStore, RetryConfig};
use pool_core::Pool;
use pool_storage::{PoolStore, PoolWrite, Precondition, StoreError};

const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy10aGF0LW11c3Qtbm90LWxlYWs=";
const SIGNATURE: &str = "UserSignatureMustNotLeak42";

fn user_sas() -> String {
    format!("?sv=2022-11-02&ss=b&srt=sco&sp=rwdc&se=2099-01-01T00:00:00Z&sig={SIGNATURE}")
}

fn base(endpoint: &str) -> AzureConfig {
    let retry = RetryConfig {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };
    AzureConfig::new("acct", "secrets")
        .and_then(|c| c.with_endpoint(endpoint))
        .expect("valid")
        .with_retry(retry)
        .with_request_timeout(Duration::from_millis(500))
}

/// Everything a user could see of an error.
fn shown(e: &StoreError) -> String {
    let mut text = format!("{e} {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    text
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` on a current-thread runtime with every TRACE event captured; returns the log.
fn with_trace_log(f: impl std::future::Future<Output = ()>) -> String {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tracing::subscriber::with_default(subscriber, || rt.block_on(f));
    let bytes = log.0.lock().expect("log buffer").clone();
    String::from_utf8(bytes).expect("UTF-8 log")
}

#[test]
fn debug_output_names_the_credential_kind_only() {
    let with_key = base("http://127.0.0.1:1/acct")
        .with_account_key(KEY)
        .unwrap();
    let with_sas = base("http://127.0.0.1:1/acct")
        .with_sas(&user_sas())
        .unwrap();
    for config in [with_key, with_sas] {
        let kind = config.credential().kind();
        let store = AzureStore::new(config.clone()).unwrap();
        for text in [
            format!("{config:?}"),
            format!("{config}"),
            format!("{store:?}"),
        ] {
            assert!(!text.contains(KEY) && !text.contains(SIGNATURE), "{text}");
        }
        assert!(format!("{config:?}").contains("<redacted>"), "{kind}");
    }
}

#[test]
fn a_user_sas_stays_out_of_errors_and_logs() {
    let mut errors = String::new();
    let log = with_trace_log(async {
        // A port nobody listens on: the transport error names the request URL.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = base(&format!("http://{closed}/acct"))
            .with_sas(&user_sas())
            .unwrap();
        let err = AzureStore::new(config)
            .unwrap()
            .load()
            .await
            .expect_err("refused");
        errors.push_str(&shown(&err));
        // The transport error names the request URL; its signature is blanked out.
        assert!(errors.contains("sig=REDACTED"), "{errors}");

        let (addr, seen) = serve(vec![Reply::Status(403, "AuthenticationFailed")]).await;
        let config = base(&format!("http://{addr}/acct"))
            .with_sas(&user_sas())
            .unwrap();
        let write = PoolWrite::Full(Pool::new().snapshot());
        let err = AzureStore::new(config)
            .unwrap()
            .save(&write, &Precondition::CreateOnly)
            .await;
        errors.push_str(&shown(&err.expect_err("forbidden")));
        let sent = seen.lock().unwrap().requests.join("\n");
        assert!(
            sent.contains(&format!("sig={SIGNATURE}")),
            "the SAS was sent: {sent}"
        );
    });
    assert!(!log.is_empty(), "the SDK logged its requests");
    assert!(!log.contains(SIGNATURE), "{log}");
    assert!(!errors.contains(SIGNATURE), "{errors}");
}

#[test]
fn a_signed_sas_and_its_key_stay_out_of_errors_and_logs() {
    let mut errors = String::new();
    let mut signature = String::new();
    let log = with_trace_log(async {
        let (addr, seen) = serve(vec![Reply::Hang]).await;
        let config = base(&format!("http://{addr}/acct"))
            .with_account_key(KEY)
            .unwrap();
        let err = AzureStore::new(config)
            .unwrap()
            .load()
            .await
            .expect_err("no answer");
        errors.push_str(&shown(&err));
        let sent = seen.lock().unwrap().requests.join("\n");
        let at = sent.find("sig=").expect("a signed SAS was sent") + 4;
        signature = sent[at..].split([' ', '&']).next().unwrap().to_owned();
    });
    assert!(signature.len() > 20, "{signature}");
    let query = format!("sig={signature}");
    let (_, decoded) = url::form_urlencoded::parse(query.as_bytes())
        .next()
        .unwrap();
    for text in [&log, &errors] {
        assert!(
            !text.contains(&signature) && !text.contains(&*decoded),
            "{text}"
        );
        assert!(!text.contains(KEY), "{text}");
    }
}
