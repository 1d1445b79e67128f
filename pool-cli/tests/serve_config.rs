//! `pool serve` configuration: every option documented in `--help` with its environment
//! variable and its real default, a start with no configuration at all, and flags over
//! environment over the TOML file.

mod common;

use std::time::Duration;

use common::server::{Server, free_port};
use common::{poll, run_pool};
use pool_cli::settings::{ServeArgs, Settings};
use pool_runtime::Durability;

/// Each option of `pool serve`: flag, environment variable, documented default.
const OPTIONS: [(&str, &str, Option<&str>); 20] = [
    ("--config", "POOL_CONFIG", None),
    ("--log", "POOL_LOG", Some("info")),
    ("--store", "POOL_STORE", Some("sqlite://./pool.db")),
    ("--listen", "POOL_LISTEN", Some("127.0.0.1:8080")),
    ("--api-token", "POOL_API_TOKEN", None),
    ("--provisioner", "POOL_PROVISIONER", Some("local")),
    ("--provision-delay", "POOL_PROVISION_DELAY", Some("2s")),
    ("--provision-timeout", "POOL_PROVISION_TIMEOUT", Some("10m")),
    ("--templates", "POOL_TEMPLATES", Some("default=5")),
    ("--max-in-flight", "POOL_MAX_IN_FLIGHT", Some("4")),
    ("--durability", "POOL_DURABILITY", Some("write-behind")),
    ("--allocation-lease", "POOL_ALLOCATION_LEASE", Some("5m")),
    ("--owner-lease", "POOL_OWNER_LEASE", Some("30s")),
    ("--owner", "POOL_OWNER", Some("random")),
    ("--metadata-ttl", "POOL_METADATA_TTL", Some("30s")),
    ("--save-delay", "POOL_SAVE_DELAY", Some("50ms")),
    ("--max-unsaved", "POOL_MAX_UNSAVED", Some("1000")),
    (
        "--metadata-cache-capacity",
        "POOL_METADATA_CACHE_CAPACITY",
        Some("100000"),
    ),
    ("--max-body-bytes", "POOL_MAX_BODY_BYTES", Some("65536")),
    ("--shutdown-timeout", "POOL_SHUTDOWN_TIMEOUT", Some("30s")),
];

/// The help text of each option, keyed by its flag.
fn option_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.strip_prefix("-h, --"))
        {
            let flag = rest.split_whitespace().next().unwrap_or_default();
            blocks.push((format!("--{flag}"), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push_str(trimmed);
            text.push(' ');
        }
    }
    blocks
}

#[test]
fn help_documents_every_option_with_its_variable_and_default() {
    let out = run_pool(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The Azure and S3 options of builds with those backends are checked by
    // backend_options.rs.
    let blocks: Vec<(String, String)> = option_blocks(&help)
        .into_iter()
        .filter(|(f, _)| !f.starts_with("--azure-") && !f.starts_with("--s3-"))
        .collect();
    let flags: Vec<&str> = blocks.iter().map(|(f, _)| f.as_str()).collect();
    let mut expected: Vec<&str> = OPTIONS.iter().map(|(f, _, _)| *f).collect();
    expected.push("--help");
    assert_eq!(flags, expected, "options of `pool serve`:\n{help}");
    for ((flag, text), (_, var, default)) in blocks.iter().zip(OPTIONS) {
        assert!(
            text.contains(&format!("[env: {var}")),
            "{flag} names no {var}: {text}"
        );
        if let Some(default) = default {
            let documented = format!("[default: {default}]");
            assert!(
                text.contains(&documented),
                "{flag} does not say {documented}: {text}"
            );
        }
    }
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("a duration")
}

#[test]
fn the_documented_defaults_are_the_ones_used() {
    let s = Settings::resolve(&ServeArgs::default()).expect("defaults resolve");
    let doc = |flag: &str| {
        let entry = OPTIONS
            .iter()
            .find(|(f, _, _)| *f == flag)
            .expect("a known flag");
        entry.2.expect("a documented default")
    };
    assert_eq!(s.store, doc("--store"));
    assert_eq!(s.listen.to_string(), doc("--listen"));
    assert_eq!(s.api_token, None);
    assert_eq!(s.provisioner, doc("--provisioner"));
    assert_eq!(s.provision_delay, duration(doc("--provision-delay")));
    assert_eq!(
        s.manager.provision_timeout,
        duration(doc("--provision-timeout"))
    );
    let (name, target) = doc("--templates").split_once('=').expect("NAME=TARGET");
    assert_eq!(s.manager.templates.len(), 1);
    assert_eq!(s.manager.templates[0].name.as_str(), name);
    assert_eq!(s.manager.templates[0].policy.target.to_string(), target);
    let in_flight = s.manager.templates[0].policy.max_in_flight;
    assert_eq!(in_flight.to_string(), doc("--max-in-flight"));
    assert_eq!(doc("--durability"), "write-behind");
    assert_eq!(s.manager.durability, Durability::WriteBehind);
    assert_eq!(
        s.manager.allocation_lease,
        duration(doc("--allocation-lease"))
    );
    assert_eq!(s.manager.owner_lease, duration(doc("--owner-lease")));
    assert_eq!(s.manager.owner, None, "random: chosen at start");
    assert_eq!(s.metadata_ttl, duration(doc("--metadata-ttl")));
    assert_eq!(s.manager.save_delay, duration(doc("--save-delay")));
    assert_eq!(s.manager.max_unsaved.to_string(), doc("--max-unsaved"));
    let capacity = s.metadata_cache_capacity.to_string();
    assert_eq!(capacity, doc("--metadata-cache-capacity"));
    assert_eq!(s.max_body_bytes.to_string(), doc("--max-body-bytes"));
    assert_eq!(s.shutdown_timeout, duration(doc("--shutdown-timeout")));
}

#[test]
fn it_starts_with_no_configuration_but_an_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Only the address (never 8080 in a test) and a shorter delay, both through the
    // environment; everything else is the default.
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("POOL_LISTEN", listen.as_str()),
        ("POOL_PROVISION_DELAY", "20ms"),
    ];
    let s = Server::start_bare(dir.path(), &[], &env);
    assert!(
        dir.path().join("pool.db").exists(),
        "the default store is ./pool.db"
    );
    s.wait_warm("default", 5);
    let status = s.pool_status();
    let templates: Vec<&String> = status["templates"]
        .as_object()
        .expect("map")
        .keys()
        .collect();
    assert_eq!(templates, ["default"]);
    assert!(
        status["owner"]
            .as_str()
            .is_some_and(|o| o.starts_with("manager-")),
        "{status}"
    );
    let a = s.allocate("chat-1", "");
    assert_eq!(a["metadata"]["provisioner"], "local");
    // The default target is five: one hand-out starts exactly one more provision.
    poll(Duration::from_secs(10), "the refill", || {
        (s.metric("pool_provisions_started_total") == 6.0).then_some(())
    });
    s.wait_warm("default", 5);
    assert_eq!(s.metric("pool_provisions_started_total"), 6.0);
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    let toml = "templates = [\"from-file=1\"]\nprovision_delay = \"10ms\"\nowner = \"filed\"\n";
    std::fs::write(&file, toml).expect("write the config");
    let config = file.display().to_string();
    let templates = |s: &Server| -> Vec<String> {
        poll(Duration::from_secs(10), "a status", || {
            let status = s.pool_status();
            Some(status["templates"].as_object()?.keys().cloned().collect())
        })
    };
    let store = |name: &str| format!("sqlite://{}/{name}.db", dir.path().display());
    let (file_store, env_store, flag_store) = (store("file"), store("env"), store("flag"));
    let from_file = Server::start(dir.path(), &["--config", &config, "--store", &file_store]);
    assert_eq!(templates(&from_file), ["from-file"]);
    assert_eq!(from_file.pool_status()["owner"], "filed");

    let env = [
        ("POOL_CONFIG", config.as_str()),
        ("POOL_TEMPLATES", "from-env=1"),
    ];
    let from_env = Server::start_with_env(dir.path(), &["--store", &env_store], &env);
    assert_eq!(templates(&from_env), ["from-env"]);

    let args = ["--templates", "from-flag=1", "--store", &flag_store];
    let from_flag = Server::start_with_env(dir.path(), &args, &env);
    assert_eq!(templates(&from_flag), ["from-flag"]);
    let status = from_flag.pool_status();
    assert_eq!(
        status["owner"], "filed",
        "the file still sets what nothing overrides"
    );
}

#[test]
fn the_config_file_sets_the_log_filter_unless_a_flag_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    let toml = "log = \"pool_runtime=debug,warn\"\ntemplates = [\"default=1\"]\n\
                provision_delay = \"10ms\"\n";
    std::fs::write(&file, toml).expect("write the config");
    let config = file.display().to_string();
    let store = |name: &str| format!("sqlite://{}/{name}.db", dir.path().display());

    let (filed, flagged) = (store("filed"), store("flagged"));
    let from_file = Server::start(dir.path(), &["--config", &config, "--store", &filed]);
    from_file.wait_warm("default", 1);
    poll(Duration::from_secs(10), "the runtime's debug lines", || {
        from_file
            .log_text()
            .contains("project provisioned")
            .then_some(())
    });
    let text = from_file.log_text();
    assert!(
        !text.contains("pool service listening"),
        "the file's filter keeps the service's info lines out:\n{text}"
    );

    let args = ["--config", &config, "--store", &flagged, "--log", "info"];
    let from_flag = Server::start(dir.path(), &args);
    from_flag.wait_warm("default", 1);
    let text = from_flag.log_text();
    assert!(text.contains("pool service listening"), "{text}");
    assert!(
        !text.contains("project provisioned"),
        "--log info wins over the file's debug filter:\n{text}"
    );
}

#[test]
fn an_invalid_log_filter_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/none.db", dir.path().display());
    let out = run_pool(&["status", "--store", &store, "--log", "pool_runtime=loudly"]);
    assert!(
        !out.status.success(),
        "an invalid filter must stop the command"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the log filter \"pool_runtime=loudly\" is not valid"),
        "{stderr}"
    );
}
