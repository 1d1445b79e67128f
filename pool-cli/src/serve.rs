//! `pool serve`: the pool manager behind the HTTP API, until SIGTERM or SIGINT.

use std::future::IntoFuture;
use std::sync::Arc;

use anyhow::Context;
use pool_runtime::PoolManager;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use axum::serve::ListenerExt;

use crate::http::{AppState, router};
use crate::metrics::Histogram;
use crate::provisioners;
use crate::settings::Settings;
use crate::stores;

/// Runs the service with `settings` (resolved by the caller, which reads the config
/// file once: it may be a pipe); returns when a signal asked it to stop and the pool
/// is stored.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let backend = stores::open(&settings.store, &settings.store_args).await?;
    let existing = backend
        .pool
        .load()
        .await
        .with_context(|| format!("loading {}", settings.store))?;
    let provisioner = provisioners::from_spec(
        &settings.provisioner,
        settings.provision_delay,
        settings.manager.provision_timeout,
        existing.as_ref().map(|v| &v.value),
    )?;
    let default_template = settings.manager.templates[0].name.clone();
    let manager = PoolManager::builder(backend.pool.clone())
        .config(settings.manager.clone())
        .provisioner(provisioner)
        .metadata(
            backend.metadata.clone(),
            settings.metadata_ttl,
            settings.metadata_cache_capacity,
        )
        .start()
        .await
        .with_context(|| format!("starting the pool manager on {}", settings.store))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let state = AppState {
        manager: manager.clone(),
        token: settings.api_token.as_deref().map(Arc::from),
        default_template,
        allocate_latency: Arc::new(Histogram::default()),
    };
    let app = router(state, settings.max_body_bytes);
    info!(listen = %settings.listen, store = %settings.store, owner = %manager.owner(), "pool service listening");
    let signalled = Arc::new(Notify::new());
    // Replies are small and written whole: send each at once rather than let Nagle's
    // algorithm hold it back for the client's acknowledgement of the previous one.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot disable Nagle's algorithm on a connection");
        }
    });
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(notify_on_signal(signalled.clone()))
        .into_future();
    // Requests still open (callers waiting for a project) get the shutdown timeout to
    // finish; then they are dropped, which leaves no project half-allocated.
    let limit = settings.shutdown_timeout;
    let drain_limit = async {
        signalled.notified().await;
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
        () = drain_limit => {
            warn!(?limit, "requests still open at the shutdown timeout; dropped them");
        }
    }
    info!("stopped accepting requests; storing the pool");
    let report = manager.shutdown(settings.shutdown_timeout).await;
    if report.clean {
        info!("pool stored; exiting");
        Ok(())
    } else {
        error!(unsaved = ?report.unsaved, set_aside = ?report.set_aside, "some changes could not be stored");
        anyhow::bail!(
            "{} project change(s) could not be stored",
            report.unsaved.len() + report.set_aside.len()
        )
    }
}

async fn notify_on_signal(signalled: Arc<Notify>) {
    signal().await;
    signalled.notify_one();
}

async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => info!("interrupted"),
        () = term => info!("terminated"),
    }
}
