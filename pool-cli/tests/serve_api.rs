//! The JSON API of the real `pool serve` binary over HTTP: allocation, tokens, metadata,
//! pool status, metrics, health, errors and the event stream.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::client::EventStream;
use common::scripts::{self, Provision};
use common::server::Server;
use common::{poll, server::metric_value};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Fast provisioning and saving, so tests wait milliseconds, not seconds.
const FAST: [&str; 4] = ["--provision-delay", "10ms", "--save-delay", "5ms"];

fn start(extra: &[&str]) -> (TempDir, Server) {
    let dir = tempfile::tempdir().expect("temp dir");
    let args: Vec<&str> = FAST.iter().copied().chain(extra.iter().copied()).collect();
    let server = Server::start(dir.path(), &args);
    (dir, server)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

fn is_local_id(id: &str, template: &str) -> bool {
    let mut parts = id.rsplitn(3, '-');
    let hex = parts.next().unwrap_or_default();
    let number = parts.next().unwrap_or_default();
    hex.len() == 5
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
        && parts.next() == Some(template)
}

#[test]
fn allocation_is_warm_carries_metadata_and_repeats_the_same_project() {
    let (_dir, s) = start(&["--templates", "default=3"]);
    s.wait_warm("default", 3);

    let a = s.allocate("chat-1", "");
    let id = str_of(&a, "project_id");
    assert!(is_local_id(id, "default"), "{id}");
    let token = str_of(&a, "token");
    assert_eq!(token.len(), 16, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert_eq!(a["warm"], true, "{a}");
    assert_eq!(a["repeat"], false, "{a}");
    assert_eq!(a["template"], "default");
    assert_eq!(a["metadata"]["project_id"], id, "{a}");
    assert_eq!(a["metadata"]["template"], "default");
    assert_eq!(a["metadata"]["provisioner"], "local");

    let again = s.allocate("chat-1", r#"{"template": "default"}"#);
    assert_eq!(again["project_id"], a["project_id"]);
    assert_eq!(again["token"], a["token"]);
    assert_eq!(again["metadata"], a["metadata"]);
    assert_eq!(again["repeat"], true, "{again}");

    let b = s.allocate("chat-2", r#"{"template": "default", "on_empty": "fail"}"#);
    assert_ne!(b["project_id"], a["project_id"]);
    assert_eq!(b["warm"], true);

    let m = s.get(&format!("/v1/projects/{id}/metadata"));
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.json(), a["metadata"]);
    assert_eq!(s.metric("pool_handouts_warm_total"), 2.0);
    assert_eq!(s.metric("pool_handouts_repeat_total"), 1.0);
    assert!(s.metric("pool_metadata_cache_hits_total") >= 1.0);
}

#[test]
fn active_and_archive_take_the_holders_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Recycling fails, so archived projects stay in the pool for the repeated archive.
    let provisioner = scripts::exec_provisioner(dir.path(), Provision::Ok, 1);
    let args = [
        "--provisioner",
        &provisioner,
        "--templates",
        "default=2",
        "--save-delay",
        "5ms",
    ];
    let s = Server::start(dir.path(), &args);
    s.wait_warm("default", 2);
    let a = s.allocate("chat-1", "");
    let (id, token) = (str_of(&a, "project_id"), str_of(&a, "token"));
    let wrong = if token == "0000000000000001" {
        "0000000000000002"
    } else {
        "0000000000000001"
    };
    let with = |t: &str| json!({ "token": t }).to_string();
    let active = format!("/v1/projects/{id}/active");
    let archive = format!("/v1/projects/{id}/archive");

    for path in [&active, &archive] {
        let r = s.post(path, &with(wrong));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "token_mismatch"),
            "{path}"
        );
    }
    let r = s.post(&active, &with(token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"project_id": id, "state": "active"}));
    assert_eq!(
        s.post(&active, &with(token)).status,
        200,
        "marking active twice"
    );
    let held = s.allocate("chat-1", "");
    assert_eq!(
        (&held["project_id"], &held["token"]),
        (&a["project_id"], &a["token"])
    );

    let r = s.post(&archive, &with(token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"project_id": id, "state": "archived"}));
    let r = s.post(&archive, &with(token));
    assert_eq!(
        r.status,
        200,
        "archiving again with the same token: {}",
        r.text()
    );
    let r = s.post(&archive, &with(wrong));
    assert_eq!((r.status, r.error_code().as_str()), (409, "token_mismatch"));
    let r = s.post(&active, &with(token));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "invalid_transition")
    );

    let next = s.allocate("chat-1", "");
    assert_ne!(
        next["project_id"], a["project_id"],
        "an archived project came back"
    );
    poll(
        Duration::from_secs(10),
        "the archived project's recycle",
        || {
            scripts::lines(dir.path(), "recycled")
                .contains(&id.to_owned())
                .then_some(())
        },
    );
    let counts = &s.pool_status()["templates"]["default"]["counts"];
    assert!(counts["archived"].as_u64() >= Some(1), "{counts}");
}

#[test]
fn archived_projects_are_recycled_and_the_pool_refills() {
    let (_dir, s) = start(&["--templates", "default=2"]);
    s.wait_warm("default", 2);
    let a = s.allocate("chat-1", "");
    let id = str_of(&a, "project_id");
    let body = json!({ "token": a["token"] }).to_string();
    assert_eq!(
        s.post(&format!("/v1/projects/{id}/archive"), &body).status,
        200
    );
    poll(
        Duration::from_secs(10),
        "the archived project to be recycled",
        || {
            let counts = &s.pool_status()["templates"]["default"]["counts"];
            let total: u64 = counts.as_object()?.values().filter_map(Value::as_u64).sum();
            (counts["archived"] == 0 && total == 2).then_some(())
        },
    );
    s.wait_warm("default", 2);
    let next = s.allocate("chat-1", "");
    assert_ne!(
        next["project_id"], a["project_id"],
        "a recycled project came back"
    );
}

/// Parses a Prometheus text exposition, checking its shape: every sample belongs to a
/// family declared with `# TYPE`, and every value is a number.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample: key value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = key.split('{').next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(families.contains_key(family), "{name} has no # TYPE line");
        samples.insert(key.to_owned(), value);
    }
    samples
}

#[test]
fn pool_status_and_metrics_count_what_happened() {
    let (_dir, s) = start(&["--templates", "default=2,spare=0"]);
    s.wait_warm("default", 2);
    s.allocate("warm-1", "");
    let r = s.post(
        "/v1/conversations/empty-1/project",
        r#"{"template": "spare"}"#,
    );
    assert_eq!((r.status, r.error_code().as_str()), (503, "pool_empty"));
    let cold = s.allocate("cold-1", r#"{"template": "spare", "on_empty": "cold"}"#);
    assert_eq!(cold["warm"], false, "{cold}");
    s.get(&format!(
        "/v1/projects/{}/metadata",
        str_of(&cold, "project_id")
    ));

    let status = s.pool_status();
    assert!(
        status["owner"].as_str().is_some_and(|o| !o.is_empty()),
        "{status}"
    );
    assert_eq!(status["health"]["status"], "healthy", "{status}");
    let default = &status["templates"]["default"];
    assert_eq!(default["counts"]["allocated"], 1, "{status}");
    assert_eq!(default["circuit"], "closed", "{status}");
    let states = default["counts"].as_object().expect("counts").len();
    assert_eq!(states, 8, "a count for every state: {status}");
    assert_eq!(
        status["templates"]["spare"]["counts"]["allocated"], 1,
        "{status}"
    );
    assert_eq!(status["metrics"]["handouts_warm"], 1, "{status}");

    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let m = parse_metrics(&r.text());
    let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(at("pool_handouts_warm_total"), 1.0);
    assert_eq!(at("pool_handouts_cold_total"), 1.0);
    assert_eq!(
        at("pool_stockouts_total"),
        2.0,
        "the failed and the cold allocation"
    );
    assert!(at("pool_wait_seconds_total") > 0.0);
    assert!(at("pool_saves_total") >= 1.0);
    assert!(at("pool_save_seconds_total") > 0.0);
    assert!(at("pool_provisions_started_total") >= 3.0);
    assert_eq!(at("pool_provisions_failed_total"), 0.0);
    assert!(
        at("pool_provisions_in_flight") <= 4.0,
        "at most --max-in-flight"
    );
    assert_eq!(at("pool_healthy"), 1.0);
    assert!(at("pool_metadata_cache_hits_total") + at("pool_metadata_cache_misses_total") >= 3.0);
    assert!(
        at("pool_unsaved_changes") <= 10.0,
        "a handful of changes at most"
    );
    assert_eq!(
        at(r#"pool_projects{template="spare",state="allocated"}"#),
        1.0
    );
    assert_eq!(
        at("pool_allocate_seconds_count"),
        3.0,
        "every allocate call is timed"
    );
    assert!(at("pool_allocate_seconds_sum") > 0.0);
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("pool_allocate_seconds_bucket{"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(buckets.iter().all(|b| *b <= 3.0), "{buckets:?}");
    assert_eq!(at(r#"pool_allocate_seconds_bucket{le="+Inf"}"#), 3.0);
}

#[test]
fn health_and_readiness_answer() {
    let (_dir, s) = start(&[]);
    let h = s.get("/healthz");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(h.json()["health"]["status"], "healthy");
    let r = s.get("/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], true);
}

/// Requests that must be refused: `METHOD PATH`, the body, and `STATUS CODE`.
const REFUSED: [(&str, &str, &str); 26] = [
    (
        "POST /v1/conversations/..%2Fetc/project",
        "",
        "400 invalid_id",
    ),
    (
        "POST /v1/conversations/..%2F..%2Fetc%2Fpasswd/project",
        "",
        "400 invalid_id",
    ),
    (
        "POST /v1/conversations/%C3%A9t%C3%A9/project",
        "",
        "400 invalid_id",
    ),
    ("POST /v1/conversations/%FF/project", "", "400 invalid_id"),
    ("POST /v1/conversations/a%00b/project", "", "400 invalid_id"),
    (
        "POST /v1/conversations/.hidden/project",
        "",
        "400 invalid_id",
    ),
    ("GET /v1/projects/%2E%2E/metadata", "", "400 invalid_id"),
    (
        "POST /v1/projects/..%2Fx/active",
        r#"{"token": "0123456789abcdef"}"#,
        "400 invalid_id",
    ),
    (
        "POST /v1/conversations/c/project",
        r#"{"template": "nope"}"#,
        "400 unknown_template",
    ),
    (
        "POST /v1/conversations/c/project",
        r#"{"template": "../x"}"#,
        "400 invalid_id",
    ),
    ("POST /v1/conversations/c/project", "{bad", "400 bad_body"),
    (
        "POST /v1/conversations/c/project",
        r#"{"extra": 1}"#,
        "400 bad_body",
    ),
    (
        "POST /v1/conversations/c/project",
        r#"{"on_empty": "later"}"#,
        "400 bad_body",
    ),
    ("POST /v1/conversations/c/project", "[1, 2]", "400 bad_body"),
    (
        "POST /v1/projects/default-1-00000/active",
        "{}",
        "400 bad_body",
    ),
    (
        "POST /v1/projects/default-1-00000/active",
        r#"{"token": "zz"}"#,
        "400 bad_body",
    ),
    (
        "POST /v1/projects/default-9-00000/active",
        r#"{"token": "0123456789abcdef"}"#,
        "404 unknown_project",
    ),
    (
        "POST /v1/projects/default-9-00000/archive",
        r#"{"token": "0123456789abcdef"}"#,
        "404 unknown_project",
    ),
    (
        "GET /v1/projects/default-9-00000/metadata",
        "",
        "404 no_metadata",
    ),
    (
        "GET /v1/conversations/c/stream?template=..%2Fx",
        "",
        "400 invalid_id",
    ),
    (
        "GET /v1/conversations/c/stream?colour=red",
        "",
        "400 bad_query",
    ),
    (
        "GET /v1/conversations/c/stream?wait_ms=soon",
        "",
        "400 bad_query",
    ),
    ("GET /v1/nothing", "", "404 not_found"),
    ("GET /", "", "404 not_found"),
    (
        "GET /v1/conversations/c/project",
        "",
        "405 method_not_allowed",
    ),
    ("DELETE /v1/pool", "", "405 method_not_allowed"),
];

fn check_refused(s: &Server, request: &str, body: &str, expected: &str) {
    let (method, path) = request.split_once(' ').expect("METHOD PATH");
    let body = (!body.is_empty()).then_some(body.as_bytes());
    let r = s
        .send(method, path, body)
        .unwrap_or_else(|e| panic!("{request}: {e}"));
    let what = format!("{request} {body:?}: {} {}", r.status, r.text());
    let json = r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    assert!(json, "{what}");
    assert_eq!(
        format!("{} {}", r.status, r.error_code()),
        expected,
        "{what}"
    );
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes() {
    let (_dir, s) = start(&["--max-body-bytes", "1024"]);
    s.wait_warm("default", 1);
    for (request, body, expected) in REFUSED {
        check_refused(&s, request, body, expected);
    }
    let long = format!("POST /v1/conversations/{}/project", "a".repeat(300));
    check_refused(&s, &long, "", "400 invalid_id");
    let big = format!(r#"{{"template": "{}"}}"#, "x".repeat(2048));
    check_refused(
        &s,
        "POST /v1/conversations/big/project",
        &big,
        "413 body_too_large",
    );
    let counts = &s.pool_status()["templates"]["default"]["counts"];
    assert_eq!(
        counts["allocated"], 0,
        "no bad request allocated anything: {counts}"
    );
}

fn names(events: &[common::client::SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[test]
fn the_stream_starts_before_the_allocation() {
    let (_dir, s) = start(&["--templates", "default=2"]);
    s.wait_warm("default", 2);
    let stream = EventStream::open(s.addr, "/v1/conversations/s-1/stream", &[]).expect("open");
    assert_eq!(stream.status, 200);
    let content_type = stream.headers.iter().find(|(k, _)| k == "content-type");
    assert_eq!(
        content_type.map(|(_, v)| v.as_str()),
        Some("text/event-stream")
    );
    let events = stream.collect().expect("read the stream");
    assert_eq!(
        names(&events),
        [
            "started", "project", "message", "message", "message", "done"
        ]
    );
    let (started, project) = (events[0].json(), events[1].json());
    assert_eq!(started["conversation_id"], "s-1");
    assert!(
        started["elapsed_us"].as_u64() <= project["elapsed_us"].as_u64(),
        "{started} {project}"
    );
    assert_eq!(project["warm"], true, "{project}");
    let held = s.allocate("s-1", "");
    assert_eq!(
        (&held["project_id"], &held["token"]),
        (&project["project_id"], &project["token"])
    );
}

#[test]
fn the_first_event_does_not_wait_for_a_cold_provision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--templates", "default=0", "--provision-delay", "600ms"];
    let s = Server::start(dir.path(), &args);
    let path = "/v1/conversations/s-cold/stream?on_empty=cold";
    let mut stream = EventStream::open(s.addr, path, &[]).expect("open");
    let started = stream.next_event().expect("read").expect("an event");
    let project = stream.next_event().expect("read").expect("an event");
    assert_eq!(
        (started.event.as_str(), project.event.as_str()),
        ("started", "project")
    );
    let gap = project.at.duration_since(started.at);
    assert!(
        gap >= Duration::from_millis(400),
        "the project came {gap:?} after `started`"
    );
    assert!(
        started.at.duration_since(stream.sent) < gap,
        "`started` waited for the provision"
    );
    assert_eq!(project.json()["warm"], false);
    let rest = stream.collect().expect("read");
    assert_eq!(names(&rest), ["message", "message", "message", "done"]);
}

#[test]
fn a_failed_allocation_ends_the_stream_with_an_error_event() {
    let (_dir, s) = start(&[]);
    let events = EventStream::open(s.addr, "/v1/conversations/s-2/stream?template=nope", &[])
        .expect("open")
        .collect()
        .expect("read");
    assert_eq!(names(&events), ["started", "error"]);
    assert_eq!(events[1].json()["code"], "unknown_template");
    let text = s.get("/metrics").text();
    assert_eq!(metric_value(&text, "pool_handouts_warm_total"), Some(0.0));
}
