//! `pool serve`, `status`, `export` and `import` on S3, against the run's moto server:
//! hand-outs over HTTP are stored in the bucket, options come from flags, the TOML file
//! or the standard AWS variables, and a missing bucket is named.

#![cfg(feature = "s3")]

mod backend_emulators;
mod common;

use std::time::Duration;

use backend_emulators::{Moto, counts, fail, moto, random_prefix};
use common::server::Server;
use common::{holders, poll, run_pool_with_env};
use pool_core::ProjectId;
use pool_s3::{S3Config, S3Store};
use pool_storage::{MetadataStore, PoolStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A direct client of the store under `prefix`, to check what `pool` wrote.
fn direct(rt: &tokio::runtime::Runtime, m: &Moto, prefix: &str) -> S3Store {
    let config = S3Config::new(&m.bucket)
        .and_then(|c| c.with_prefix(prefix))
        .and_then(|c| c.with_endpoint(&m.endpoint))
        .and_then(|c| c.with_region(&m.region))
        .expect("a valid configuration")
        .with_static_credentials(&m.access_key, &m.secret_key);
    rt.block_on(S3Store::connect(&config)).expect("a store")
}

#[test]
fn serve_on_s3_configured_by_file_stores_every_hand_out() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = random_prefix("serve");
    let url = m.url(&prefix);
    let config = dir.path().join("pool.toml");
    let text = format!(
        "s3_endpoint = {:?}\ns3_region = {:?}\ns3_access_key = {:?}\ns3_secret_key = {:?}\n\
         s3_create_bucket = true\ntemplates = [\"default=2\"]\nprovision_delay = \"5ms\"\n",
        m.endpoint, m.region, m.access_key, m.secret_key
    );
    std::fs::write(&config, text).expect("write the config file");
    let config_arg = config.display().to_string();
    let mut s = Server::start(dir.path(), &["--store", &url, "--config", &config_arg]);
    s.wait_warm("default", 2);
    let a = s.allocate("chat-1", "");
    assert_eq!(a["warm"], true, "{a}");
    let id = a["project_id"].as_str().expect("a project id").to_owned();
    let token = a["token"].as_str().expect("a token").to_owned();

    let rt = runtime();
    let store = direct(&rt, &m, &prefix);
    poll(
        Duration::from_secs(30),
        "the hand-out in the bucket",
        || {
            let stored = rt.block_on(store.load()).expect("load")?;
            let held = holders(&stored.value);
            (held.get(&id) == Some(&("chat-1".to_owned(), token.clone()))).then_some(())
        },
    );
    let project = ProjectId::new(id.clone()).expect("a valid id");
    let metadata = rt.block_on(store.get_metadata(&project)).expect("read");
    assert_eq!(metadata.map(|m| m.value), Some(a["metadata"].clone()));

    // Keys from the standard AWS variables, the rest from flags.
    let env = [
        ("AWS_ACCESS_KEY_ID", m.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", m.secret_key.as_str()),
    ];
    let args = [
        "status",
        "--json",
        "--store",
        &url,
        "--s3-endpoint",
        &m.endpoint,
        "--s3-region",
        &m.region,
    ];
    let out = run_pool_with_env(&args, &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(counts(&status, "default")[1], 1, "one allocated: {status}");
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn status_export_and_import_work_against_s3() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let source = m.url(&random_prefix("source"));
    backend_emulators::populate(dir.path(), &source, &m.options());
    let target = m.url(&random_prefix("target"));
    backend_emulators::status_export_import(dir.path(), &source, &target, &m.options());
}

#[test]
fn a_missing_bucket_is_named_and_created_only_when_asked() {
    let Some(m) = moto() else { return };
    let bucket = format!("cli-missing-{:016x}", rand::random::<u64>());
    let url = format!("s3://{bucket}/p");
    let keys = [
        "--s3-endpoint",
        &m.endpoint,
        "--s3-region",
        &m.region,
        "--s3-access-key",
        &m.access_key,
        "--s3-secret-key",
        &m.secret_key,
    ];
    let err = fail(&[&["status", "--store", &url][..], &keys[..]].concat());
    assert!(err.contains(&bucket), "the bucket is named: {err}");
    assert!(!err.contains("no pool is stored"), "{err}");

    let create = [&keys[..], &["--s3-create-bucket"]].concat();
    let err = fail(&[&["export", "--store", &url][..], &create[..]].concat());
    assert!(
        err.contains(&format!("no pool is stored at {url}")),
        "{err}"
    );
    let err = fail(&[&["status", "--store", &url][..], &keys[..]].concat());
    assert!(err.contains("no pool is stored"), "{err}");
    // The URL's own options work too; flags would override them.
    let with_query = format!("{url}?endpoint={}&region={}", m.endpoint, m.region);
    let keys_only = [
        "--s3-access-key",
        &m.access_key,
        "--s3-secret-key",
        &m.secret_key,
    ];
    let err = fail(&[&["status", "--store", &with_query][..], &keys_only[..]].concat());
    assert!(err.contains("no pool is stored"), "{err}");
}
