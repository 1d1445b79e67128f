//! A config file that is not valid TOML is refused with the line, the column and what is
//! wrong, but without repeating the line: it may hold a secret (`api_token`, a backend
//! key), and no error shows a secret.

mod common;

use common::run_pool_with_env;

#[test]
fn a_syntax_error_in_the_config_file_does_not_repeat_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.toml");
    let config = file.display().to_string();
    let broken = [
        (
            "templates = [\"default=1\"]\napi_token = \"secret-api-token-333\n",
            2,
        ),
        ("api_token = \"secret-api-token-333\" and more\n", 1),
    ];
    for (toml, line) in broken {
        std::fs::write(&file, toml).expect("write the config");
        // Without --log the file is read for its log filter first; with it, only for
        // the other settings.
        for extra in [&[][..], &["--log", "info"][..]] {
            let mut args = vec!["serve", "--config", &config];
            args.extend_from_slice(extra);
            let out = run_pool_with_env(&args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{toml:?} {extra:?}: {stderr}");
            assert!(
                !stderr.contains("secret-api-token-333"),
                "{toml:?} {extra:?} shows the secret:\n{stderr}"
            );
            assert!(
                stderr.contains(&format!("parsing {config}"))
                    && stderr.contains(&format!("line {line}, column")),
                "{toml:?} {extra:?} does not say where:\n{stderr}"
            );
        }
    }
}
