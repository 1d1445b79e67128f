//! SQLite work runs off the async workers but is logged inside the caller's span.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pool_core::Pool;
use pool_sqlite::{SqliteConfig, SqliteStore};
use pool_storage::{PoolStore, PoolWrite, Precondition};
use tracing::Instrument;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_and_loads_log_in_the_callers_span() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_thread_names(true)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::file(dir.path().join("p.db")))
        .await
        .unwrap();
    let write = PoolWrite::Full(Pool::new().snapshot());
    let save = store.save(&write, &Precondition::CreateOnly);
    save.instrument(tracing::info_span!("handout", request = 7))
        .await
        .unwrap();
    let load = store.load();
    load.instrument(tracing::info_span!("startup", request = 8))
        .await
        .unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let saved = text
        .lines()
        .find(|l| l.contains("saved the pool"))
        .expect("a save event");
    assert!(
        saved.contains("pool-sqlite-writer"),
        "on the writer thread: {saved}"
    );
    assert!(
        saved.contains("handout{request=7}"),
        "in the caller's span: {saved}"
    );
    let loaded = text
        .lines()
        .find(|l| l.contains("loaded the pool"))
        .expect("a load event");
    assert!(
        loaded.contains("startup{request=8}"),
        "in the caller's span: {loaded}"
    );
}
