//! A log filter that names nothing (`""`, `","`) is refused like any other invalid
//! filter, wherever it comes from: parsed as is, it would turn every log line off,
//! errors included, without a word (and an empty `POOL_LOG` would silently override the
//! config file's filter).

mod common;

use common::run_pool_with_env;

fn assert_refused(out: &std::process::Output, filter: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{filter:?} must stop the command");
    assert!(
        stderr.contains(&format!("the log filter {filter:?} is not valid")),
        "{filter:?}: {stderr}"
    );
}

#[test]
fn an_empty_log_filter_is_refused_from_the_flag_and_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/none.db", dir.path().display());
    for filter in ["", ",", " , "] {
        let out = run_pool_with_env(&["status", "--store", &store, "--log", filter], &[]);
        assert_refused(&out, filter);
        let out = run_pool_with_env(&["status", "--store", &store], &[("POOL_LOG", filter)]);
        assert_refused(&out, filter);
    }
}

#[test]
fn an_empty_log_filter_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    // The store names no backend, so that a filter let through fails on the store
    // instead of starting a service.
    std::fs::write(&file, "log = \"\"\nstore = \"nowhere://x\"\n").expect("write the config");
    let config = file.display().to_string();
    let out = run_pool_with_env(&["serve", "--config", &config], &[]);
    assert_refused(&out, "");
}
