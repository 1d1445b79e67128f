//! The Azure and S3 options of every store-using command: listed in `--help` with their
//! variables but never with a secret's value, and clear errors (missing credentials, bad
//! URLs) that name the store without repeating a secret. Nothing here needs an emulator:
//! every case fails before a request is sent.

#![cfg(any(feature = "azure", feature = "s3"))]

mod common;

use std::process::Output;

use common::pool_command;

/// Secret values put in the environment; none may be printed.
const SECRETS: [(&str, &str); 7] = [
    ("POOL_AZURE_KEY", "c2VjcmV0LWF6dXJlLWtleS0xMjM0NQ=="),
    ("POOL_AZURE_SAS", "sv=2024&sig=secret-sas-signature-777"),
    ("POOL_S3_ACCESS_KEY", "AKIDSECRETACCESS888"),
    ("POOL_S3_SECRET_KEY", "secret-s3-key-999"),
    ("POOL_S3_SESSION_TOKEN", "secret-session-token-000"),
    ("AWS_SECRET_ACCESS_KEY", "secret-aws-variable-111"),
    ("POOL_API_TOKEN", "secret-api-token-222"),
];

/// Runs `pool ARGS` with `env` and without any AWS variables from the caller.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = pool_command();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run pool")
}

fn failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pool {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The backend flags of this build with their variables.
fn flags() -> Vec<(&'static str, &'static str)> {
    let mut flags = Vec::new();
    if cfg!(feature = "azure") {
        flags.extend([
            ("--azure-endpoint", "POOL_AZURE_ENDPOINT"),
            ("--azure-key", "POOL_AZURE_KEY"),
            ("--azure-sas", "POOL_AZURE_SAS"),
            ("--azure-entra", "POOL_AZURE_ENTRA"),
            ("--azure-emulator", "POOL_AZURE_EMULATOR"),
            ("--azure-create-container", "POOL_AZURE_CREATE_CONTAINER"),
        ]);
    }
    if cfg!(feature = "s3") {
        flags.extend([
            ("--s3-endpoint", "POOL_S3_ENDPOINT"),
            ("--s3-region", "POOL_S3_REGION"),
            ("--s3-path-style", "POOL_S3_PATH_STYLE"),
            ("--s3-access-key", "POOL_S3_ACCESS_KEY"),
            ("--s3-secret-key", "POOL_S3_SECRET_KEY"),
            ("--s3-session-token", "POOL_S3_SESSION_TOKEN"),
            ("--s3-create-bucket", "POOL_S3_CREATE_BUCKET"),
        ]);
    }
    flags
}

/// The help text of option `flag`: its line and the ones up to the next option.
fn option_text(help: &str, flag: &str) -> Option<String> {
    let is_option = |l: &str| l.trim_start().starts_with('-');
    let mut lines = help.lines().skip_while(|l| {
        let first = l.trim_start().split([' ', '=', '[']).next();
        first != Some(flag)
    });
    let first = lines.next()?;
    let rest = lines.take_while(|l| !is_option(l));
    Some(
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[test]
fn help_lists_the_backend_options_but_no_secret_value() {
    let endpoint = ("POOL_AZURE_ENDPOINT", "http://127.0.0.1:9/shown-endpoint");
    let region = ("POOL_S3_REGION", "eu-shown-1");
    let mut env = SECRETS.to_vec();
    env.extend([endpoint, region]);
    for command in ["serve", "status", "export", "import"] {
        let out = run(&[command, "--help"], &env);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help");
        for (flag, var) in flags() {
            let block = option_text(&help, flag)
                .unwrap_or_else(|| panic!("{command} --help lacks {flag}:\n{help}"));
            assert!(block.contains(&format!("[env: {var}")), "{flag}: {block}");
        }
        for (var, value) in SECRETS {
            assert!(
                !help.contains(value),
                "{command} --help shows {var}:\n{help}"
            );
        }
        // Values that are not secret are shown, so the variables were read.
        if cfg!(feature = "azure") {
            assert!(help.contains(endpoint.1), "{help}");
        }
        if cfg!(feature = "s3") {
            assert!(help.contains(region.1), "{help}");
        }
    }
}

#[cfg(feature = "azure")]
#[test]
fn azure_stores_need_one_credential_and_a_valid_url() {
    let store = "azure://someaccount/pools/team-a";
    for command in ["status", "export"] {
        let err = failure(&[command, "--store", store], &[]);
        assert!(err.contains(&format!("store {store}")), "{err}");
        assert!(err.contains("no credential"), "{err}");
        assert!(
            err.contains("--azure-key") && err.contains("--azure-emulator"),
            "{err}"
        );
    }
    let both = [SECRETS[0], ("POOL_AZURE_ENTRA", "true")];
    let err = failure(&["status", "--store", store], &both);
    assert!(err.contains("give one credential"), "{err}");

    let key = "not base64 secret-key-value";
    let err = failure(&["status", "--store", store, "--azure-key", key], &[]);
    assert!(
        err.contains("not valid base64") && !err.contains(key),
        "{err}"
    );
    let sas = "sv=2024&sp=rwc&secret-sas-without-signature";
    let err = failure(&["status", "--store", store, "--azure-sas", sas], &[]);
    assert!(err.contains("sig=") && !err.contains("secret-sas"), "{err}");

    let cases = [
        ("azure://Bad_Account/pools", "storage account name"),
        ("azure://someaccount/Bad_Container", "container name"),
        ("azure://someaccount", "container name"),
        ("azure://someaccount/pools/a//b", "prefix"),
        ("azure://someaccount/pools?sig=secret-in-url", "no query"),
    ];
    for (url, wanted) in cases {
        let err = failure(&["status", "--store", url, "--azure-emulator"], &[]);
        assert!(err.contains(wanted), "{url}: {err}");
        assert!(!err.contains("secret-in-url"), "{url}: {err}");
    }
}

#[cfg(feature = "s3")]
#[test]
fn s3_stores_need_both_keys_and_a_valid_url() {
    let store = "s3://pools/team-a";
    for command in ["status", "export"] {
        let err = failure(&[command, "--store", store], &[]);
        assert!(err.contains(&format!("store {store}")), "{err}");
        assert!(err.contains("no credentials"), "{err}");
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
    let err = failure(&["status", "--store", store], &[SECRETS[2]]);
    assert!(
        err.contains("--s3-secret-key") && !err.contains(SECRETS[2].1),
        "{err}"
    );
    let err = failure(&["status", "--store", store], &[SECRETS[5]]);
    assert!(
        err.contains("--s3-access-key") && !err.contains(SECRETS[5].1),
        "{err}"
    );

    let cases = [
        ("s3://Bad_Bucket/p", "invalid bucket name"),
        ("s3://pools/a/../b", "invalid key prefix"),
        (
            "s3://pools/p?secret_key=secret-in-url",
            "credentials are not accepted",
        ),
        ("s3://pools/p?colour=blue", "unknown option colour"),
    ];
    for (url, wanted) in cases {
        let err = failure(&["status", "--store", url], &SECRETS[2..4]);
        assert!(err.contains(wanted), "{url}: {err}");
        assert!(!err.contains("secret-in-url"), "{url}: {err}");
    }
    let err = failure(
        &["status", "--store", store, "--s3-region", "Not A Region"],
        &SECRETS[2..4],
    );
    assert!(err.contains("region"), "{err}");
}
