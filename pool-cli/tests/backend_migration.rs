//! A pool migrated SQLite -> Azure -> S3 -> SQLite with `pool export` and `pool import`
//! arrives unchanged, project metadata included, and a manager on the last store still
//! knows who holds what.

#![cfg(all(feature = "azure", feature = "s3", feature = "sqlite"))]

mod backend_emulators;
mod common;

use backend_emulators::{azurite, export_json, moto, pool_ok, populate, random_prefix};
use common::holders;
use common::server::Server;
use pool_core::PoolSnapshot;

#[test]
fn a_pool_round_trips_through_every_backend() {
    let (Some(az), Some(m)) = (azurite(), moto()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let first = format!("sqlite://{}/first.db", dir.path().display());
    populate(dir.path(), &first, &[]);
    let original = export_json(&first, &[]);
    let stops = [
        (az.url(&random_prefix("migrate")), az.shortcut()),
        (m.url(&random_prefix("migrate")), m.options()),
        (format!("sqlite://{}/last.db", dir.path().display()), vec![]),
    ];
    let mut from = (first, Vec::new());
    for (url, options) in stops {
        let file = dir.path().join("hop.json");
        let file_arg = file.display().to_string();
        pool_ok("export", &from.0, &from.1, &["-o", &file_arg]);
        pool_ok("import", &url, &options, &[&file_arg]);
        assert_eq!(export_json(&url, &options), original, "{} -> {url}", from.0);
        from = (url, options);
    }

    let snapshot =
        PoolSnapshot::from_json(original.to_string().as_bytes()).expect("the export is a snapshot");
    let held = holders(&snapshot);
    let (project, (_, token)) = held
        .iter()
        .find(|(_, (c, _))| c == "chat-1")
        .expect("chat-1 holds a project");
    let s = Server::start(
        dir.path(),
        &["--store", &from.0, "--templates", "default=2,web=1"],
    );
    let again = s.allocate("chat-1", "");
    assert_eq!(again["project_id"].as_str(), Some(project.as_str()));
    assert_eq!(again["token"].as_str(), Some(token.as_str()));
}
