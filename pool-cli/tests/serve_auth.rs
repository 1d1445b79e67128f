//! The bearer token of `pool serve`: what it guards, where it comes from, and the refusal
//! to listen on a public address without one.

mod common;

use common::server::{Server, free_port};
use common::{run_pool, run_pool_with_env};

const TOKEN: &str = "s3cret-token-4711";

/// Every guarded endpoint: method, path, body.
const GUARDED: [(&str, &str, &str); 7] = [
    ("POST", "/v1/conversations/c-1/project", ""),
    ("GET", "/v1/conversations/c-2/stream", ""),
    (
        "POST",
        "/v1/projects/default-1-00000/active",
        r#"{"token": "0123456789abcdef"}"#,
    ),
    (
        "POST",
        "/v1/projects/default-1-00000/archive",
        r#"{"token": "0123456789abcdef"}"#,
    ),
    ("GET", "/v1/projects/default-1-00000/metadata", ""),
    ("GET", "/v1/pool", ""),
    ("GET", "/metrics", ""),
];

fn status_with(s: &Server, method: &str, path: &str, body: &str, auth: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let body = (!body.is_empty()).then_some(body.as_bytes());
    let r = s.raw(method, path, &headers, body).expect("request");
    if r.status == 401 {
        assert_eq!(r.error_code(), "unauthorized", "{method} {path}");
    }
    r.status
}

#[test]
fn a_token_guards_every_endpoint_but_health() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--api-token", TOKEN, "--provision-delay", "10ms"];
    let s = Server::start(dir.path(), &args);
    let good = format!("Bearer {TOKEN}");
    let refused = [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Basic czNjcmV0"),
        Some("Bearer s3cret-token-471"),
        Some("Bearer s3cret-token-47111"),
    ];
    for (method, path, body) in GUARDED {
        for auth in refused {
            let status = status_with(&s, method, path, body, auth);
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
        }
    }
    let counts = &s.pool_status()["templates"]["default"]["counts"];
    assert_eq!(
        counts["allocated"], 0,
        "a refused request allocated: {counts}"
    );
    for (method, path, body) in GUARDED {
        let status = status_with(&s, method, path, body, Some(&good));
        assert_ne!(status, 401, "{method} {path} with the token");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(status_with(&s, "GET", path, "", None), 200, "{path}");
    }
    assert!(!s.log_text().contains(TOKEN), "the token was logged");
}

#[test]
fn an_empty_token_in_the_environment_leaves_the_files_token_in_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    std::fs::write(&file, format!("api_token = \"{TOKEN}\"\n")).expect("write the config");
    let config = file.display().to_string();
    let env = [("POOL_API_TOKEN", "")];
    let s = Server::start_with_env(dir.path(), &["--config", &config], &env);
    assert_eq!(status_with(&s, "GET", "/v1/pool", "", None), 401);
    let good = format!("Bearer {TOKEN}");
    assert_eq!(status_with(&s, "GET", "/v1/pool", "", Some(&good)), 200);
}

#[test]
fn the_token_can_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start_with_env(dir.path(), &[], &[("POOL_API_TOKEN", TOKEN)]);
    assert_eq!(status_with(&s, "GET", "/v1/pool", "", None), 401);
    let good = format!("Bearer {TOKEN}");
    assert_eq!(status_with(&s, "GET", "/v1/pool", "", Some(&good)), 200);
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/pool.db", dir.path().display());
    let port = free_port();
    for listen in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        for env in [&[][..], &[("POOL_API_TOKEN", "")][..]] {
            let args = ["serve", "--listen", &listen, "--store", &store];
            let out = run_pool_with_env(&args, env);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{listen} {env:?}: {stderr}");
            assert!(
                stderr.contains(&format!("refusing to listen on {listen}")),
                "{stderr}"
            );
            assert!(stderr.contains("--api-token"), "{stderr}");
        }
    }
    let short_lease = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--owner-lease",
        "1ms",
    ];
    let out = run_pool(&short_lease);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--owner-lease"));
    assert!(
        !dir.path().join("pool.db").exists(),
        "the store was opened before refusing"
    );
}
