//! `pool serve`, `status`, `export` and `import` on Azure Blob Storage, against the run's
//! Azurite: hand-outs over HTTP are stored in the container, the emulator shortcut and
//! the explicit endpoint and key both work, and a missing container is named.

#![cfg(feature = "azure")]

mod backend_emulators;
mod common;

use std::time::Duration;

use backend_emulators::{Azurite, azurite, counts, fail, pool_ok, random_prefix};
use common::server::Server;
use common::{holders, poll};
use pool_azure::{AzureConfig, AzureStore};
use pool_core::ProjectId;
use pool_storage::{MetadataStore, PoolStore};

/// A direct client of the store under `prefix`, to check what `pool` wrote.
fn direct(az: &Azurite, prefix: &str) -> AzureStore {
    let config = AzureConfig::new(&az.account, &az.container)
        .and_then(|c| c.with_endpoint(&az.endpoint))
        .and_then(|c| c.with_account_key(&az.key))
        .and_then(|c| c.with_prefix(prefix))
        .expect("a valid configuration");
    AzureStore::new(config).expect("a store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn serve_on_azurite_hands_out_projects_and_stores_every_hand_out() {
    let Some(az) = azurite() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = random_prefix("serve");
    let url = az.url(&prefix);
    let shortcut = az.shortcut();
    let mut args = vec!["--store", url.as_str()];
    args.extend(shortcut.iter().map(String::as_str));
    args.extend(["--templates", "default=2", "--provision-delay", "5ms"]);
    let mut s = Server::start(dir.path(), &args);
    s.wait_warm("default", 2);
    let a = s.allocate("chat-1", "");
    assert_eq!(a["warm"], true, "{a}");
    let id = a["project_id"].as_str().expect("a project id").to_owned();
    let token = a["token"].as_str().expect("a token").to_owned();

    // The hand-out and the project's metadata are in the container, under the prefix.
    let store = direct(&az, &prefix);
    let rt = runtime();
    poll(Duration::from_secs(30), "the hand-out in Azurite", || {
        let stored = rt.block_on(store.load()).expect("load")?;
        let held = holders(&stored.value);
        (held.get(&id) == Some(&("chat-1".to_owned(), token.clone()))).then_some(())
    });
    let project = ProjectId::new(id.clone()).expect("a valid id");
    let metadata = rt.block_on(store.get_metadata(&project)).expect("read");
    assert_eq!(metadata.map(|m| m.value), Some(a["metadata"].clone()));

    let status = pool_ok("status", &url, &shortcut, &["--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(counts(&status, "default")[1], 1, "one allocated: {status}");
    assert!(!s.log_text().contains(&az.key), "the key was logged");
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));

    // A new manager on the same store answers the conversation with the same project.
    let s = Server::start(dir.path(), &args);
    let again = s.allocate("chat-1", "");
    assert_eq!(
        (&again["project_id"], &again["token"]),
        (&a["project_id"], &a["token"])
    );
}

#[test]
fn status_export_and_import_work_against_azurite() {
    let Some(az) = azurite() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let source = az.url(&random_prefix("source"));
    backend_emulators::populate(dir.path(), &source, &az.shortcut());
    let target = az.url(&random_prefix("target"));
    backend_emulators::status_export_import(dir.path(), &source, &target, &az.explicit());
}

#[test]
fn a_missing_container_is_named_and_created_only_when_asked() {
    let Some(az) = azurite() else { return };
    let container = format!("cli-missing-{:016x}", rand::random::<u64>());
    let url = format!("azure://{}/{container}/p", az.account);
    let key_only = ["--azure-endpoint", &az.endpoint, "--azure-key", &az.key];
    let err = fail(&[&["status", "--store", &url][..], &key_only[..]].concat());
    assert!(err.contains("container does not exist"), "{err}");
    assert!(err.contains(&container), "the container is named: {err}");
    assert!(!err.contains(&az.key), "{err}");

    let create = [&key_only[..], &["--azure-create-container"]].concat();
    let err = fail(&[&["export", "--store", &url][..], &create[..]].concat());
    assert!(
        err.contains(&format!("no pool is stored at {url}")),
        "{err}"
    );
    // Created once, the container serves without the option.
    let err = fail(&[&["status", "--store", &url][..], &key_only[..]].concat());
    assert!(err.contains("no pool is stored"), "{err}");
}
