//! `s3://BUCKET[/PREFIX]` stores: options, and opening them.

#[cfg(feature = "s3")]
pub use enabled::S3Args;
#[cfg(feature = "s3")]
pub(super) use enabled::open;

#[cfg(not(feature = "s3"))]
pub use disabled::S3Args;
#[cfg(not(feature = "s3"))]
pub(super) use disabled::open;

#[cfg(feature = "s3")]
mod enabled {
    use anyhow::{Context, bail};
    use clap::builder::BoolishValueParser;
    use pool_s3::{S3Config, S3Store};

    use super::super::{Backend, Secret, shown, take_bool, take_string};

    /// The `--help` section of these options.
    const HEADING: &str = "S3 (s3://BUCKET[/PREFIX])";

    /// Where an S3 store is served and the keys to it.
    #[derive(clap::Args, Debug, Clone, Default)]
    pub struct S3Args {
        /// Endpoint of an S3-compatible server, e.g. http://127.0.0.1:9000
        /// [default: AWS in the region]
        #[arg(long, help_heading = HEADING, env = "POOL_S3_ENDPOINT", value_name = "URL")]
        pub s3_endpoint: Option<String>,
        /// Region requests are signed for [default: us-east-1]
        #[arg(long, help_heading = HEADING, env = "POOL_S3_REGION", value_name = "REGION")]
        pub s3_region: Option<String>,
        /// Address the bucket in the path rather than the host name
        /// [default: true with --s3-endpoint, false otherwise]
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_S3_PATH_STYLE",
            num_args = 0..=1,
            default_missing_value = "true",
            value_parser = BoolishValueParser::new(),
            value_name = "BOOL"
        )]
        pub s3_path_style: Option<bool>,
        /// Access key id [or env AWS_ACCESS_KEY_ID]
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_S3_ACCESS_KEY",
            hide_env_values = true,
            value_name = "ID",
        )]
        pub s3_access_key: Option<Secret>,
        /// Secret access key [or env AWS_SECRET_ACCESS_KEY]
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_S3_SECRET_KEY",
            hide_env_values = true,
            value_name = "KEY",
        )]
        pub s3_secret_key: Option<Secret>,
        /// Session token of temporary credentials [or env AWS_SESSION_TOKEN, with
        /// AWS_ACCESS_KEY_ID]
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_S3_SESSION_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        pub s3_session_token: Option<Secret>,
        /// Create the bucket if it does not exist.
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_S3_CREATE_BUCKET",
            value_parser = BoolishValueParser::new(),
        )]
        pub s3_create_bucket: bool,
    }

    impl S3Args {
        pub(in crate::stores) fn fill_from_file(
            &mut self,
            table: &mut toml::Table,
        ) -> anyhow::Result<()> {
            fill(&mut self.s3_endpoint, take_string(table, "s3_endpoint")?);
            fill(&mut self.s3_region, take_string(table, "s3_region")?);
            fill(&mut self.s3_path_style, take_bool(table, "s3_path_style")?);
            let mut secret = |key| take_string(table, key).map(|v| v.map(Secret::from));
            fill(&mut self.s3_access_key, secret("s3_access_key")?);
            fill(&mut self.s3_secret_key, secret("s3_secret_key")?);
            fill(&mut self.s3_session_token, secret("s3_session_token")?);
            self.s3_create_bucket |= take_bool(table, "s3_create_bucket")?.unwrap_or(false);
            Ok(())
        }
    }

    fn fill<T>(slot: &mut Option<T>, from_file: Option<T>) {
        if slot.is_none() {
            *slot = from_file;
        }
    }

    /// The store's configuration from its URL, the options and, for keys the options
    /// leave out, the standard AWS variables read through `env`.
    fn config(
        url: &str,
        args: &S3Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<S3Config> {
        let mut config = S3Config::from_url(url)?;
        if let Some(endpoint) = &args.s3_endpoint {
            config = config.with_endpoint(endpoint)?;
        }
        if let Some(region) = &args.s3_region {
            config = config.with_region(region)?;
        }
        if let Some(path_style) = args.s3_path_style {
            config = config.with_path_style(path_style);
        }
        let from_env = |name| {
            env(name)
                .filter(|v: &String| !v.is_empty())
                .map(Secret::from)
        };
        let (access, token) = match &args.s3_access_key {
            Some(key) => (Some(key.clone()), args.s3_session_token.clone()),
            None => (
                from_env("AWS_ACCESS_KEY_ID"),
                args.s3_session_token
                    .clone()
                    .or_else(|| from_env("AWS_SESSION_TOKEN")),
            ),
        };
        let secret = args
            .s3_secret_key
            .clone()
            .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"));
        let config = match (access, secret) {
            (Some(access), Some(secret)) => {
                config.with_static_credentials(access.expose(), secret.expose())
            }
            (None, None) => bail!(
                "no credentials: give --s3-access-key and --s3-secret-key (or POOL_S3_ACCESS_KEY \
                 and POOL_S3_SECRET_KEY, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ),
            (Some(_), None) => bail!(
                "an access key but no secret key: give --s3-secret-key (or POOL_S3_SECRET_KEY \
                 or AWS_SECRET_ACCESS_KEY)"
            ),
            (None, Some(_)) => bail!(
                "a secret key but no access key: give --s3-access-key (or POOL_S3_ACCESS_KEY \
                 or AWS_ACCESS_KEY_ID)"
            ),
        };
        Ok(match token {
            Some(token) => config.with_session_token(token.expose()),
            None => config,
        })
    }

    /// Opens an S3 store; creates its bucket first when asked to.
    pub(in crate::stores) async fn open(url: &str, args: &S3Args) -> anyhow::Result<Backend> {
        let name = shown(url);
        let config = config(url, args, |name| std::env::var(name).ok())
            .with_context(|| format!("store {name}"))?;
        tracing::debug!(
            store = config.location(),
            endpoint = config.endpoint().unwrap_or("aws"),
            region = config.region(),
            path_style = config.path_style(),
            "opening S3 store"
        );
        let store = S3Store::connect(&config)
            .await
            .with_context(|| format!("store {name}"))?;
        if args.s3_create_bucket {
            store
                .ensure_bucket()
                .await
                .with_context(|| format!("store {name}"))?;
        }
        Ok(Backend::shared(store))
    }

    #[cfg(test)]
    mod tests {
        use pool_s3::S3Credentials;

        use super::*;

        fn keys(access: &str, secret: &str) -> S3Args {
            S3Args {
                s3_access_key: Some(Secret::from(access.to_owned())),
                s3_secret_key: Some(Secret::from(secret.to_owned())),
                ..S3Args::default()
            }
        }

        fn no_env(_: &str) -> Option<String> {
            None
        }

        #[test]
        fn options_override_the_url() {
            let args = S3Args {
                s3_endpoint: Some("http://127.0.0.1:9".into()),
                s3_region: Some("eu-west-1".into()),
                s3_path_style: Some(false),
                ..keys("id", "secret")
            };
            let url = "s3://bucket/a/b?region=us-west-2&endpoint=http://127.0.0.1:8";
            let c = config(url, &args, no_env).unwrap();
            assert_eq!(c.location(), "s3://bucket/a/b");
            assert_eq!(c.endpoint(), Some("http://127.0.0.1:9"));
            assert_eq!(c.region(), "eu-west-1");
            assert!(!c.path_style());
        }

        #[test]
        fn keys_come_from_options_or_the_aws_variables() {
            let env = |name: &str| Some(format!("env-{name}"));
            let c = config("s3://bucket", &S3Args::default(), env).unwrap();
            let S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } = c.credentials()
            else {
                panic!("static keys expected");
            };
            assert_eq!(access_key_id, "env-AWS_ACCESS_KEY_ID");
            assert_eq!(secret_access_key.expose(), "env-AWS_SECRET_ACCESS_KEY");
            assert_eq!(
                session_token.as_ref().map(|t| t.expose()),
                Some("env-AWS_SESSION_TOKEN")
            );
            // An access key given as an option never pairs with the environment's token.
            let c = config("s3://bucket", &keys("id", "s"), env).unwrap();
            assert!(matches!(
                c.credentials(),
                S3Credentials::Static { access_key_id, session_token: None, .. }
                    if access_key_id == "id"
            ));
        }

        #[test]
        fn missing_keys_are_named_and_given_secrets_are_not_repeated() {
            let none = config("s3://bucket", &S3Args::default(), no_env).unwrap_err();
            assert!(none.to_string().contains("--s3-access-key"), "{none}");
            let half = S3Args {
                s3_access_key: Some(Secret::from("AKIDHALF".to_owned())),
                ..S3Args::default()
            };
            let err = config("s3://bucket", &half, no_env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--s3-secret-key") && !err.contains("AKIDHALF"),
                "{err}"
            );
            let other = S3Args {
                s3_secret_key: Some(Secret::from("hush".to_owned())),
                ..S3Args::default()
            };
            let err = config("s3://bucket", &other, no_env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--s3-access-key") && !err.contains("hush"),
                "{err}"
            );
            let debug = format!("{:?}", keys("id", "hush"));
            assert!(!debug.contains("hush"), "{debug}");
        }

        #[test]
        fn the_file_fills_what_flags_left_unset() {
            let text = "s3_endpoint = \"http://127.0.0.1:1\"\ns3_region = \"eu-west-1\"\n\
                        s3_path_style = true\ns3_access_key = \"a\"\ns3_secret_key = \"s\"\n\
                        s3_create_bucket = true\nkeep = 1\n";
            let mut table: toml::Table = toml::from_str(text).unwrap();
            let mut args = S3Args {
                s3_region: Some("us-west-2".into()),
                ..S3Args::default()
            };
            args.fill_from_file(&mut table).unwrap();
            assert_eq!(args.s3_endpoint.as_deref(), Some("http://127.0.0.1:1"));
            assert_eq!(args.s3_region.as_deref(), Some("us-west-2"));
            assert_eq!(args.s3_path_style, Some(true));
            assert_eq!(args.s3_secret_key.as_ref().map(Secret::expose), Some("s"));
            assert!(args.s3_create_bucket);
            assert_eq!(table.keys().collect::<Vec<_>>(), ["keep"]);
        }
    }
}

#[cfg(not(feature = "s3"))]
mod disabled {
    use anyhow::bail;

    use super::super::{Backend, refuse_keys, shown};

    /// The config file keys of this backend.
    const FILE_KEYS: [&str; 7] = [
        "s3_endpoint",
        "s3_region",
        "s3_path_style",
        "s3_access_key",
        "s3_secret_key",
        "s3_session_token",
        "s3_create_bucket",
    ];

    /// S3 options; this build has no S3 backend, so there are none.
    #[derive(clap::Args, Debug, Clone, Default)]
    pub struct S3Args {}

    impl S3Args {
        pub(in crate::stores) fn fill_from_file(
            &mut self,
            table: &mut toml::Table,
        ) -> anyhow::Result<()> {
            refuse_keys(table, &FILE_KEYS, "s3")
        }
    }

    pub(in crate::stores) async fn open(url: &str, _: &S3Args) -> anyhow::Result<Backend> {
        bail!(
            "store {}: this build has no S3 backend (enable the `s3` feature)",
            shown(url)
        )
    }
}
