//! `pool serve --provisioner exec:COMMAND` end to end: a user script provisions and
//! recycles projects; its failures, malformed output and timeouts are provision failures.

mod common;

use std::time::Duration;

use common::poll;
use common::scripts::{self, Provision};
use common::server::Server;
use serde_json::json;

fn start(dir: &std::path::Path, provision: Provision, extra: &[&str]) -> Server {
    let spec = scripts::exec_provisioner(dir, provision, 0);
    let mut args = vec!["--provisioner", &spec, "--save-delay", "5ms"];
    args.extend(extra);
    Server::start(dir, &args)
}

#[test]
fn a_script_fills_the_pool_and_destroys_archived_projects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = start(dir.path(), Provision::Ok, &["--templates", "default=3"]);
    s.wait_warm("default", 3);
    let a = s.allocate("chat-1", "");
    let id = a["project_id"].as_str().expect("project id").to_owned();
    assert!(
        scripts::lines(dir.path(), "provisioned").contains(&id),
        "{id}"
    );
    assert_eq!(a["metadata"], json!({"via": "exec", "template": "default"}));
    let m = s.get(&format!("/v1/projects/{id}/metadata"));
    assert_eq!(m.json(), a["metadata"]);

    let body = json!({ "token": a["token"] }).to_string();
    assert_eq!(
        s.post(&format!("/v1/projects/{id}/archive"), &body).status,
        200
    );
    poll(
        Duration::from_secs(10),
        "the script to recycle the project",
        || {
            scripts::lines(dir.path(), "recycled")
                .contains(&id)
                .then_some(())
        },
    );
    poll(
        Duration::from_secs(10),
        "the recycled project to leave",
        || {
            let counts = &s.pool_status()["templates"]["default"]["counts"];
            (counts["archived"] == 0).then_some(())
        },
    );
    let status = s.pool_status();
    assert_eq!(status["templates"]["default"]["circuit"], "closed");
    assert_eq!(status["metrics"]["provisions_failed"], 0, "{status}");
}

#[test]
fn failing_provisions_open_the_circuit_and_show_in_the_pool_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = ["--templates", "default=5", "--max-in-flight", "5"];
    let s = start(dir.path(), Provision::Fail, &extra);
    let status = poll(Duration::from_secs(20), "an open circuit", || {
        let status = s.pool_status();
        (status["templates"]["default"]["circuit"] == "open").then_some(status)
    });
    assert!(
        status["metrics"]["provisions_failed"].as_u64() >= Some(5),
        "{status}"
    );
    assert!(s.metric("pool_provisions_failed_total") >= 5.0);

    let r = s.post("/v1/conversations/c-1/project", "");
    assert_eq!((r.status, r.error_code().as_str()), (503, "pool_empty"));
    let r = s.post("/v1/conversations/c-2/project", r#"{"on_empty": "cold"}"#);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "provision_failed")
    );
    let message = r.json()["error"]["message"].to_string();
    assert!(message.contains("no quota left"), "{message}");
    assert_eq!(
        s.get("/readyz").status,
        200,
        "provisioning trouble is not storage trouble"
    );
}

#[test]
fn malformed_output_and_timeouts_are_provision_failures() {
    let cases = [
        (Provision::Garbage, "malformed"),
        (Provision::Hang, "longer than"),
    ];
    for (provision, reason) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = ["--templates", "default=0", "--provision-timeout", "300ms"];
        let s = start(dir.path(), provision, &extra);
        let r = s.post("/v1/conversations/c-1/project", r#"{"on_empty": "cold"}"#);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (502, "provision_failed")
        );
        let message = r.json()["error"]["message"].to_string();
        assert!(message.contains(reason), "{provision:?}: {message}");
        assert_eq!(s.metric("pool_provisions_failed_total"), 1.0);
        let counts = &s.pool_status()["templates"]["default"]["counts"];
        assert_eq!(counts["allocated"], 0, "{counts}");
    }
}
