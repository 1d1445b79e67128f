//! `azure://ACCOUNT/CONTAINER[/PREFIX]` stores: options, and opening them.

#[cfg(feature = "azure")]
pub use enabled::AzureArgs;
#[cfg(feature = "azure")]
pub(super) use enabled::open;

#[cfg(not(feature = "azure"))]
pub use disabled::AzureArgs;
#[cfg(not(feature = "azure"))]
pub(super) use disabled::open;

#[cfg(feature = "azure")]
mod enabled {
    use anyhow::{Context, bail};
    use clap::builder::BoolishValueParser;
    use pool_azure::{AzureConfig, AzureStore, Credential};

    use super::super::{Backend, Secret, shown, take_bool, take_string};

    /// The `--help` section of these options.
    const HEADING: &str = "Azure Blob Storage (azure://ACCOUNT/CONTAINER[/PREFIX])";

    /// Where an Azure store is served and how to sign in to it.
    #[derive(clap::Args, Debug, Clone, Default)]
    pub struct AzureArgs {
        /// Blob service endpoint, e.g. a private endpoint
        /// [default: `https://ACCOUNT.blob.core.windows.net`]
        #[arg(long, help_heading = HEADING, env = "POOL_AZURE_ENDPOINT", value_name = "URL")]
        pub azure_endpoint: Option<String>,
        /// Storage account key (base64). It is never sent: short-lived SAS tokens are
        /// signed with it and renewed.
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_AZURE_KEY",
            hide_env_values = true,
            value_name = "KEY",
        )]
        pub azure_key: Option<Secret>,
        /// A shared access signature (the query string, with or without `?`) that grants
        /// read, write and create on the container.
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_AZURE_SAS",
            hide_env_values = true,
            value_name = "SAS",
        )]
        pub azure_sas: Option<Secret>,
        /// Sign in with Entra ID: workload identity when AZURE_FEDERATED_TOKEN_FILE is
        /// set, managed identity otherwise (needs an https endpoint).
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_AZURE_ENTRA",
            value_parser = BoolishValueParser::new(),
        )]
        pub azure_entra: bool,
        /// Use an Azurite emulator: its well-known account key, ENDPOINT (or
        /// http://127.0.0.1:10000/ACCOUNT), and the container created if missing.
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_AZURE_EMULATOR",
            num_args = 0..=1,
            default_missing_value = "true",
            value_name = "ENDPOINT"
        )]
        pub azure_emulator: Option<String>,
        /// Create the container if it does not exist (on with --azure-emulator).
        #[arg(
            long,
            help_heading = HEADING,
            env = "POOL_AZURE_CREATE_CONTAINER",
            value_parser = BoolishValueParser::new()
        )]
        pub azure_create_container: bool,
    }

    impl AzureArgs {
        pub(in crate::stores) fn fill_from_file(
            &mut self,
            table: &mut toml::Table,
        ) -> anyhow::Result<()> {
            fill(
                &mut self.azure_endpoint,
                take_string(table, "azure_endpoint")?,
            );
            fill(
                &mut self.azure_key,
                take_string(table, "azure_key")?.map(Secret::from),
            );
            fill(
                &mut self.azure_sas,
                take_string(table, "azure_sas")?.map(Secret::from),
            );
            self.azure_entra |= take_bool(table, "azure_entra")?.unwrap_or(false);
            let emulator = match table.remove("azure_emulator") {
                Some(toml::Value::Boolean(on)) => Some(on.to_string()),
                Some(toml::Value::String(endpoint)) => Some(endpoint),
                Some(other) => bail!(
                    "azure_emulator must be true or an endpoint, not a {}",
                    other.type_str()
                ),
                None => None,
            };
            fill(&mut self.azure_emulator, emulator);
            let create = take_bool(table, "azure_create_container")?;
            self.azure_create_container |= create.unwrap_or(false);
            Ok(())
        }

        /// The emulator endpoint, if the emulator was asked for; `true`, `1` and the like
        /// (from the environment) mean the default endpoint of the URL's account.
        fn emulator(&self) -> Option<Option<&str>> {
            match self.azure_emulator.as_deref()?.trim() {
                "false" | "0" | "no" | "off" => None,
                "" | "true" | "1" | "yes" | "on" => Some(None),
                endpoint => Some(Some(endpoint)),
            }
        }
    }

    fn fill<T>(slot: &mut Option<T>, from_file: Option<T>) {
        if slot.is_none() {
            *slot = from_file;
        }
    }

    /// The store's configuration from its URL and the options.
    fn config(url: &str, args: &AzureArgs) -> anyhow::Result<AzureConfig> {
        let config = AzureConfig::from_url(url)?;
        let emulator = args.emulator();
        let given = [
            args.azure_key.is_some(),
            args.azure_sas.is_some(),
            args.azure_entra,
            emulator.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            bail!(
                "give one credential: --azure-key, --azure-sas, --azure-entra or --azure-emulator"
            );
        }
        if let Some(endpoint) = emulator {
            if args.azure_endpoint.is_some() {
                let both = "--azure-emulator=ENDPOINT, not --azure-endpoint";
                bail!("give the emulator's endpoint as {both}");
            }
            return Ok(config.with_emulator(endpoint)?);
        }
        let config = match &args.azure_endpoint {
            Some(endpoint) => config.with_endpoint(endpoint)?,
            None => config,
        };
        Ok(if let Some(key) = &args.azure_key {
            config.with_account_key(key.expose())?
        } else if let Some(sas) = &args.azure_sas {
            config.with_sas(sas.expose())?
        } else if args.azure_entra {
            config.with_credential(Credential::Entra)
        } else {
            bail!(
                "no credential: give --azure-key, --azure-sas, --azure-entra (Entra ID) or \
                 --azure-emulator (Azurite), or their POOL_AZURE_* variables"
            )
        })
    }

    /// Opens an Azure store; creates its container first when asked to (or on the
    /// emulator).
    pub(in crate::stores) async fn open(url: &str, args: &AzureArgs) -> anyhow::Result<Backend> {
        let name = shown(url);
        let config = config(url, args).with_context(|| format!("store {name}"))?;
        tracing::debug!(
            store = %config,
            endpoint = %config.endpoint(),
            credential = config.credential().kind(),
            "opening Azure store"
        );
        let store = AzureStore::new(config).with_context(|| format!("store {name}"))?;
        if args.azure_create_container || args.emulator().is_some() {
            store
                .ensure_container()
                .await
                .with_context(|| format!("store {name}"))?;
        }
        Ok(Backend::shared(store))
    }

    #[cfg(test)]
    mod tests {
        use pool_azure::{EMULATOR_ENDPOINT, EMULATOR_KEY};

        use super::*;

        fn args(f: impl FnOnce(&mut AzureArgs)) -> AzureArgs {
            let mut a = AzureArgs::default();
            f(&mut a);
            a
        }

        #[test]
        fn the_emulator_shortcut_uses_azurite_defaults() {
            let a = args(|a| a.azure_emulator = Some(EMULATOR_ENDPOINT.into()));
            let c = config("azure://devstoreaccount1/pool/x", &a).unwrap();
            assert_eq!(c.endpoint().as_str(), EMULATOR_ENDPOINT);
            assert_eq!(c.credential().kind(), "account-key");
            let a = args(|a| a.azure_emulator = Some("true".into()));
            let c = config("azure://devstoreaccount1/pool", &a).unwrap();
            assert_eq!(c.endpoint().as_str(), EMULATOR_ENDPOINT);
            let c = config("azure://otheraccount/pool", &a).unwrap();
            assert_eq!(c.endpoint().as_str(), "http://127.0.0.1:10000/otheraccount");
            assert!(!format!("{c:?}").contains(EMULATOR_KEY));
            let a = args(|a| a.azure_emulator = Some("http://127.0.0.1:4/devstoreaccount1".into()));
            let c = config("azure://devstoreaccount1/pool", &a).unwrap();
            assert_eq!(c.endpoint().port(), Some(4));
            let off = args(|a| a.azure_emulator = Some("0".into()));
            assert!(off.emulator().is_none());
        }

        #[test]
        fn the_emulator_flag_takes_an_optional_endpoint() {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                azure: AzureArgs,
                #[arg(long)]
                next: bool,
            }
            let parse = |args: &[&str]| {
                let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
                (cli.azure.azure_emulator, cli.next)
            };
            let alone = parse(&["pool", "--azure-emulator", "--next"]);
            assert_eq!(alone, (Some("true".to_owned()), true));
            let given = parse(&["pool", "--azure-emulator", "http://127.0.0.1:5/a"]);
            assert_eq!(given.0.as_deref(), Some("http://127.0.0.1:5/a"));
            let a = args(|a| a.azure_emulator = given.0);
            assert_eq!(a.emulator(), Some(Some("http://127.0.0.1:5/a")));
        }

        #[test]
        fn one_credential_is_needed_and_no_more() {
            let none = config("azure://acct/pool", &AzureArgs::default()).unwrap_err();
            assert!(none.to_string().contains("--azure-entra"), "{none}");
            let two = args(|a| {
                a.azure_key = Some(Secret::from("a2V5".to_owned()));
                a.azure_entra = true;
            });
            let err = config("azure://acct/pool", &two).unwrap_err();
            assert!(err.to_string().contains("give one credential"), "{err}");
            let entra = args(|a| a.azure_entra = true);
            let c = config("azure://acct/pool", &entra).unwrap();
            assert_eq!(c.credential().kind(), "entra");
        }

        #[test]
        fn bad_secrets_are_refused_without_being_repeated() {
            let key = args(|a| a.azure_key = Some(Secret::from("not base64 !!".to_owned())));
            let err = format!("{:#}", config("azure://acct/pool", &key).unwrap_err());
            assert!(
                err.contains("not valid base64") && !err.contains("!!"),
                "{err}"
            );
            let sas = args(|a| a.azure_sas = Some(Secret::from("sv=1&sp=rw".to_owned())));
            let err = format!("{:#}", config("azure://acct/pool", &sas).unwrap_err());
            assert!(err.contains("sig=") && !err.contains("sp=rw"), "{err}");
        }

        #[test]
        fn the_file_fills_what_flags_left_unset() {
            let text = "azure_endpoint = \"http://127.0.0.1:1/a\"\nazure_key = \"k\"\n\
                        azure_emulator = true\nazure_create_container = true\nother = 1\n";
            let mut table: toml::Table = toml::from_str(text).unwrap();
            let mut a = args(|a| a.azure_endpoint = Some("http://127.0.0.1:2/a".into()));
            a.fill_from_file(&mut table).unwrap();
            assert_eq!(a.azure_endpoint.as_deref(), Some("http://127.0.0.1:2/a"));
            assert_eq!(a.azure_key.as_ref().map(Secret::expose), Some("k"));
            assert_eq!(a.azure_emulator.as_deref(), Some("true"));
            assert!(a.azure_create_container);
            assert_eq!(table.keys().collect::<Vec<_>>(), ["other"]);
        }
    }
}

#[cfg(not(feature = "azure"))]
mod disabled {
    use anyhow::bail;

    use super::super::{Backend, refuse_keys, shown};

    /// The config file keys of this backend.
    const FILE_KEYS: [&str; 6] = [
        "azure_endpoint",
        "azure_key",
        "azure_sas",
        "azure_entra",
        "azure_emulator",
        "azure_create_container",
    ];

    /// Azure options; this build has no Azure backend, so there are none.
    #[derive(clap::Args, Debug, Clone, Default)]
    pub struct AzureArgs {}

    impl AzureArgs {
        pub(in crate::stores) fn fill_from_file(
            &mut self,
            table: &mut toml::Table,
        ) -> anyhow::Result<()> {
            refuse_keys(table, &FILE_KEYS, "azure")
        }
    }

    pub(in crate::stores) async fn open(url: &str, _: &AzureArgs) -> anyhow::Result<Backend> {
        bail!(
            "store {}: this build has no Azure backend (enable the `azure` feature)",
            shown(url)
        )
    }
}
