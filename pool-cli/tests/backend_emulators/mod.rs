//! The emulators the backend tests run against (Azurite and the moto S3 server, as
//! `cargo xtask test` describes them in `POOL_TEST_*`), store URLs under random prefixes,
//! and the `pool` options that reach them.

#![allow(dead_code, reason = "each test file uses a different part")]

/// The run's Azurite.
#[derive(Debug, Clone)]
pub(crate) struct Azurite {
    pub(crate) endpoint: String,
    pub(crate) account: String,
    pub(crate) key: String,
    pub(crate) container: String,
}

/// The run's S3 server.
#[derive(Debug, Clone)]
pub(crate) struct Moto {
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) bucket: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Says how to run the emulator tests, or panics under CI so they never pass unrun.
fn skip(family: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but POOL_TEST_{family}_* are not: run the tests with `cargo xtask test`"
    );
    println!(
        "skipping: set POOL_TEST_{family}_* (run `cargo xtask test` or `cargo xtask emulators`)"
    );
}

/// The run's Azurite, from `POOL_TEST_AZURE_*`.
pub(crate) fn azurite() -> Option<Azurite> {
    let found = (|| {
        Some(Azurite {
            endpoint: var("POOL_TEST_AZURE_ENDPOINT")?,
            account: var("POOL_TEST_AZURE_ACCOUNT")?,
            key: var("POOL_TEST_AZURE_KEY")?,
            container: var("POOL_TEST_AZURE_CONTAINER")?,
        })
    })();
    if found.is_none() {
        skip("AZURE");
    }
    found
}

/// The run's S3 server, from `POOL_TEST_S3_*`.
pub(crate) fn moto() -> Option<Moto> {
    let found = (|| {
        Some(Moto {
            endpoint: var("POOL_TEST_S3_ENDPOINT")?,
            region: var("POOL_TEST_S3_REGION")?,
            access_key: var("POOL_TEST_S3_ACCESS_KEY")?,
            secret_key: var("POOL_TEST_S3_SECRET_KEY")?,
            bucket: var("POOL_TEST_S3_BUCKET")?,
        })
    })();
    if found.is_none() {
        skip("S3");
    }
    found
}

/// A prefix no other test uses.
pub(crate) fn random_prefix(label: &str) -> String {
    format!("cli-{label}-{:016x}", rand::random::<u64>())
}

impl Azurite {
    /// The store URL of `prefix` in the run's container.
    pub(crate) fn url(&self, prefix: &str) -> String {
        format!("azure://{}/{}/{prefix}", self.account, self.container)
    }

    /// The emulator shortcut with the run's endpoint.
    pub(crate) fn shortcut(&self) -> Vec<String> {
        vec!["--azure-emulator".into(), self.endpoint.clone()]
    }

    /// Explicit endpoint and key options, creating the container if missing.
    pub(crate) fn explicit(&self) -> Vec<String> {
        [
            "--azure-endpoint",
            &self.endpoint,
            "--azure-key",
            &self.key,
            "--azure-create-container",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Moto {
    /// The store URL of `prefix` in the run's bucket.
    pub(crate) fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Endpoint, region and credential options, creating the bucket if missing.
    pub(crate) fn options(&self) -> Vec<String> {
        [
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            &self.region,
            "--s3-access-key",
            &self.access_key,
            "--s3-secret-key",
            &self.secret_key,
            "--s3-create-bucket",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// `pool ARGS` must succeed; its standard output and error.
pub(crate) fn succeed(args: &[&str]) -> (String, String) {
    let out = super::common::run_pool(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pool {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// `pool ARGS` must fail without panicking; its standard error.
pub(crate) fn fail(args: &[&str]) -> String {
    let out = super::common::run_pool(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pool {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `pool COMMAND --store URL OPTIONS REST...` as one argument list.
pub(crate) fn command(command: &str, url: &str, options: &[String], rest: &[&str]) -> Vec<String> {
    let mut all = vec![command.to_owned(), "--store".to_owned(), url.to_owned()];
    all.extend(options.iter().cloned());
    all.extend(rest.iter().map(|s| (*s).to_owned()));
    all
}

/// Runs [`command`] and requires success.
pub(crate) fn pool_ok(command_name: &str, url: &str, options: &[String], rest: &[&str]) -> String {
    let args = command(command_name, url, options, rest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeed(&args).0
}

/// The export of `url` (snapshot plus project metadata) as JSON.
pub(crate) fn export_json(url: &str, options: &[String]) -> serde_json::Value {
    let text = pool_ok("export", url, options, &[]);
    serde_json::from_str(&text).expect("pool export writes JSON")
}

/// Stores a pool at `url` by running `pool serve` on it until a clean stop: `default`
/// has 2 available and chat-1 allocated, `web` has 1 available and chat-2 active.
pub(crate) fn populate(dir: &std::path::Path, url: &str, options: &[String]) {
    use std::time::Duration;

    let mut args = vec!["--store", url];
    args.extend(options.iter().map(String::as_str));
    args.extend(["--templates", "default=2,web=1", "--provision-delay", "5ms"]);
    let mut s = super::common::server::Server::start(dir, &args);
    s.wait_warm("default", 2);
    s.wait_warm("web", 1);
    s.allocate("chat-1", "");
    let b = s.allocate("chat-2", r#"{"template": "web"}"#);
    let id = b["project_id"].as_str().expect("a project id");
    let body = serde_json::json!({ "token": b["token"] }).to_string();
    let active = s.post(&format!("/v1/projects/{id}/active"), &body);
    assert_eq!(active.status, 200, "{}", active.text());
    s.wait_warm("default", 2);
    s.wait_warm("web", 1);
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
}

/// The state counts of `template` in `pool status --json` output.
pub(crate) fn counts(status: &serde_json::Value, template: &str) -> Vec<u64> {
    ["available", "allocated", "active", "quarantined"]
        .iter()
        .map(|state| {
            status["templates"][template][state]
                .as_u64()
                .expect("a count")
        })
        .collect()
}

/// `pool status`, `export` and `import` on a backend: the pool stored at `source` is
/// exported, imported into the fresh store `target`, found there unchanged with its
/// project metadata, and not imported again without `--force`.
pub(crate) fn status_export_import(
    dir: &std::path::Path,
    source: &str,
    target: &str,
    options: &[String],
) {
    let status: serde_json::Value =
        serde_json::from_str(&pool_ok("status", source, options, &["--json"])).expect("JSON");
    assert_eq!(status["projects"], 5, "{status}");
    assert_eq!(counts(&status, "default"), [2, 1, 0, 0], "{status}");
    assert_eq!(counts(&status, "web"), [1, 0, 1, 0], "{status}");
    let table = pool_ok("status", source, options, &[]);
    let first = table.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!("store {source}  version ")),
        "{table}"
    );

    let file = dir.join("export.json");
    let file_arg = file.display().to_string();
    pool_ok("export", source, options, &["-o", &file_arg]);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read the export")).expect("JSON");
    let documents = exported["project_metadata"].as_object().map(|m| m.len());
    assert_eq!(documents, Some(5), "every project's metadata is exported");
    assert_eq!(
        export_json(source, options),
        exported,
        "-o and stdout differ"
    );

    let said = pool_ok("import", target, options, &[&file_arg]);
    assert!(
        said.is_empty(),
        "import prints to standard error only: {said}"
    );
    assert_eq!(export_json(target, options), exported, "the import differs");
    let again: serde_json::Value =
        serde_json::from_str(&pool_ok("status", target, options, &["--json"])).expect("JSON");
    assert_eq!(again, status);

    let args = command("import", target, options, &[&file_arg]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = fail(&args);
    assert!(refused.contains("already holds a pool"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    pool_ok("import", target, options, &[&file_arg, "--force"]);
    let forced = export_json(target, options);
    assert_eq!(forced["projects"], exported["projects"]);
    let version = |v: &serde_json::Value| v["pool_version"].as_u64().expect("a version");
    assert!(
        version(&forced) > version(&exported),
        "the version went back"
    );
}
