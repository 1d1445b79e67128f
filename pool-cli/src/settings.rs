//! `pool serve` settings: flags and environment variables over a TOML file over
//! built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use pool_core::{OwnerId, TemplateName};
use pool_runtime::{Durability, ManagerConfig, TemplateConfig};
use serde::Deserialize;

use crate::stores::StoreArgs;

/// `pool serve` options. Every option can also be set by its environment variable or in
/// the TOML file given with `--config` (same names, with `_` for `-`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// A TOML file with any of these settings.
    #[arg(long, env = "POOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the pool is stored.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "POOL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Bearer token required by every endpoint but /healthz and /readyz. Required to
    /// listen on a non-loopback address; an empty value counts as unset.
    #[arg(long, env = "POOL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// `local` (mints projects after --provision-delay) or `exec:COMMAND` [default: local].
    #[arg(long, env = "POOL_PROVISIONER")]
    pub provisioner: Option<String>,
    /// How long the local provisioner takes per project [default: 2s].
    #[arg(long, env = "POOL_PROVISION_DELAY", value_parser = humantime::parse_duration)]
    pub provision_delay: Option<Duration>,
    /// The longest one provision may take [default: 10m].
    #[arg(long, env = "POOL_PROVISION_TIMEOUT", value_parser = humantime::parse_duration)]
    pub provision_timeout: Option<Duration>,
    /// Templates kept warm, as NAME=TARGET, comma separated [default: default=5].
    #[arg(long, env = "POOL_TEMPLATES", value_delimiter = ',')]
    pub templates: Option<Vec<String>>,
    /// Provisions per template running at once [default: 4].
    #[arg(long, env = "POOL_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// `write-behind` (answer at once, save behind) or `durable` (answer once stored)
    /// [default: write-behind].
    #[arg(long, env = "POOL_DURABILITY")]
    pub durability: Option<String>,
    /// How long an allocation may go unmarked-active before it is reclaimed [default: 5m].
    #[arg(long, env = "POOL_ALLOCATION_LEASE", value_parser = humantime::parse_duration)]
    pub allocation_lease: Option<Duration>,
    /// How long this manager's liveness lease lasts without renewal [default: 30s].
    #[arg(long, env = "POOL_OWNER_LEASE", value_parser = humantime::parse_duration)]
    pub owner_lease: Option<Duration>,
    /// This manager's owner id [default: random].
    #[arg(long, env = "POOL_OWNER")]
    pub owner: Option<String>,
    /// How long project metadata is cached [default: 30s].
    #[arg(long, env = "POOL_METADATA_TTL", value_parser = humantime::parse_duration)]
    pub metadata_ttl: Option<Duration>,
    /// How long write-behind changes are gathered into one save [default: 50ms].
    #[arg(long, env = "POOL_SAVE_DELAY", value_parser = humantime::parse_duration)]
    pub save_delay: Option<Duration>,
    /// Projects whose change may wait unsaved before hand-outs wait for a save: what a
    /// crash may cost at most [default: 1000].
    #[arg(long, env = "POOL_MAX_UNSAVED")]
    pub max_unsaved: Option<usize>,
    /// Metadata documents the read cache holds, at most [default: 100000].
    #[arg(long, env = "POOL_METADATA_CACHE_CAPACITY")]
    pub metadata_cache_capacity: Option<u64>,
    /// Largest request body accepted, in bytes [default: 65536].
    #[arg(long, env = "POOL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// At shutdown, how long open requests may take to finish, and then how long
    /// storing everything may take [default: 30s].
    #[arg(long, env = "POOL_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The log filter, handed to `pool` as [`Settings::log`].
    log: Option<String>,
    store: Option<String>,
    listen: Option<SocketAddr>,
    api_token: Option<String>,
    provisioner: Option<String>,
    #[serde(default, with = "opt_duration")]
    provision_delay: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    provision_timeout: Option<Duration>,
    templates: Option<Vec<String>>,
    max_in_flight: Option<usize>,
    durability: Option<String>,
    #[serde(default, with = "opt_duration")]
    allocation_lease: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    owner_lease: Option<Duration>,
    owner: Option<String>,
    #[serde(default, with = "opt_duration")]
    metadata_ttl: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    save_delay: Option<Duration>,
    max_unsaved: Option<usize>,
    metadata_cache_capacity: Option<u64>,
    max_body_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    shutdown_timeout: Option<Duration>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Everything `pool serve` runs with, defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store URL.
    pub store: String,
    /// Backend options.
    pub store_args: StoreArgs,
    /// The listening address.
    pub listen: SocketAddr,
    /// The bearer token, if any.
    pub api_token: Option<String>,
    /// The provisioner spec.
    pub provisioner: String,
    /// The local provisioner's delay.
    pub provision_delay: Duration,
    /// The manager's configuration.
    pub manager: ManagerConfig,
    /// The metadata cache's TTL.
    pub metadata_ttl: Duration,
    /// The most documents the metadata cache holds.
    pub metadata_cache_capacity: u64,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The shutdown deadline.
    pub shutdown_timeout: Duration,
    /// The config file's log filter, if it sets one. `--log` and `POOL_LOG` belong to
    /// `pool` itself, which starts logging with this one only when they are unset.
    pub log: Option<String>,
}

impl Settings {
    /// Resolves `args` over the file they name over the defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut store_args = args.store.clone();
        let file = match &args.config {
            Some(path) => read_file(path, &mut store_args)?,
            None => FileSettings::default(),
        };
        let store = args
            .store
            .store
            .clone()
            .or(file.store)
            .unwrap_or_else(|| crate::stores::DEFAULT_STORE.into());
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        // An empty token (say `POOL_API_TOKEN=` from an unset variable) counts as unset:
        // it must not switch off a token the config file sets.
        let set = |t: &String| !t.is_empty();
        let api_token = args
            .api_token
            .clone()
            .filter(set)
            .or(file.api_token.filter(set));
        if !listen.ip().is_loopback() && api_token.is_none() {
            bail!(
                "refusing to listen on {listen} without --api-token: only loopback addresses may go unauthenticated"
            );
        }
        let templates = args
            .templates
            .clone()
            .or(file.templates)
            .unwrap_or_else(|| vec!["default=5".into()]);
        let max_in_flight = args.max_in_flight.or(file.max_in_flight).unwrap_or(4);
        let durability = match args.durability.clone().or(file.durability).as_deref() {
            None | Some("write-behind") => Durability::WriteBehind,
            Some("durable") => Durability::Durable,
            Some(other) => bail!("--durability must be write-behind or durable, not {other:?}"),
        };
        let owner = args
            .owner
            .clone()
            .or(file.owner)
            .map(OwnerId::new)
            .transpose()
            .context("--owner")?;
        let defaults = ManagerConfig::default();
        let owner_lease = args
            .owner_lease
            .or(file.owner_lease)
            .unwrap_or(defaults.owner_lease);
        anyhow::ensure!(
            owner_lease >= MIN_OWNER_LEASE,
            "--owner-lease must be at least {MIN_OWNER_LEASE:?}, not {owner_lease:?}"
        );
        let heartbeat = heartbeat_for(owner_lease, defaults.heartbeat_interval);
        let max_unsaved = args
            .max_unsaved
            .or(file.max_unsaved)
            .unwrap_or(defaults.max_unsaved);
        anyhow::ensure!(max_unsaved >= 1, "--max-unsaved must be at least 1");
        let manager = ManagerConfig {
            owner,
            templates: parse_templates(&templates, max_in_flight)?,
            durability,
            allocation_lease: args
                .allocation_lease
                .or(file.allocation_lease)
                .unwrap_or(defaults.allocation_lease),
            owner_lease,
            heartbeat_interval: heartbeat,
            maintain_interval: defaults.maintain_interval.min(heartbeat),
            save_delay: args
                .save_delay
                .or(file.save_delay)
                .unwrap_or(defaults.save_delay),
            provision_timeout: args
                .provision_timeout
                .or(file.provision_timeout)
                .unwrap_or(Duration::from_secs(600)),
            max_unsaved,
            ..defaults
        };
        Ok(Self {
            store,
            store_args,
            listen,
            api_token,
            provisioner: args
                .provisioner
                .clone()
                .or(file.provisioner)
                .unwrap_or_else(|| "local".into()),
            provision_delay: args
                .provision_delay
                .or(file.provision_delay)
                .unwrap_or(Duration::from_secs(2)),
            manager,
            metadata_ttl: args
                .metadata_ttl
                .or(file.metadata_ttl)
                .unwrap_or(Duration::from_secs(30)),
            metadata_cache_capacity: args
                .metadata_cache_capacity
                .or(file.metadata_cache_capacity)
                .unwrap_or(100_000),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(64 * 1024),
            shutdown_timeout: args
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(Duration::from_secs(30)),
            log: file.log,
        })
    }
}

/// Reads a config file: the backend options into `store_args` where flags and
/// environment left them unset, everything else strictly into [`FileSettings`].
fn read_file(path: &Path, store_args: &mut StoreArgs) -> anyhow::Result<FileSettings> {
    let context = || format!("parsing {}", path.display());
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| syntax_error(&text, &e))
        .with_context(context)?;
    store_args
        .fill_from_file(&mut table)
        .with_context(context)?;
    toml::Value::Table(table).try_into().with_context(context)
}

/// A TOML syntax error as its line, column and message, without the line itself: the
/// line may hold a secret (`api_token`, a backend key), and no error shows a secret.
fn syntax_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let (mut line, mut column) = (1, 1);
            for (_, c) in text.char_indices().take_while(|(i, _)| *i < span.start) {
                if c == '\n' {
                    (line, column) = (line + 1, 1);
                } else {
                    column += 1;
                }
            }
            anyhow::anyhow!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => anyhow::anyhow!("TOML syntax error: {message}"),
    }
}

/// The shortest owner lease accepted: renewals must fit well inside it.
const MIN_OWNER_LEASE: Duration = Duration::from_millis(300);

/// How often to renew an owner lease of `lease`: a third of it, so that two renewals
/// can be late before other managers presume this one dead, and never less often than
/// `default`.
fn heartbeat_for(lease: Duration, default: Duration) -> Duration {
    (lease / 3).min(default)
}

/// Parses `NAME=TARGET` entries.
pub fn parse_templates(
    entries: &[String],
    max_in_flight: usize,
) -> anyhow::Result<Vec<TemplateConfig>> {
    let mut out = Vec::new();
    for entry in entries {
        let (name, target) = entry
            .split_once('=')
            .with_context(|| format!("template {entry:?} is not NAME=TARGET"))?;
        let name = TemplateName::new(name.trim()).with_context(|| format!("template {entry:?}"))?;
        let target: usize = target
            .trim()
            .parse()
            .with_context(|| format!("template {entry:?}: target"))?;
        let mut t = TemplateConfig::new(name, target);
        t.policy.max_in_flight = max_in_flight;
        out.push(t);
    }
    anyhow::ensure!(!out.is_empty(), "at least one template is needed");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(s.store, "sqlite://./pool.db");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.provisioner, "local");
        assert_eq!(s.manager.templates.len(), 1);
        assert_eq!(s.manager.templates[0].name.as_str(), "default");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ntemplates = [\"web=3\"]\nsave_delay = \"10ms\"\n\
             max_unsaved = 20000\nmetadata_cache_capacity = 500\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            templates: Some(vec!["api=7".into()]),
            max_unsaved: Some(5000),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.manager.max_unsaved, 5000);
        assert_eq!(s.metadata_cache_capacity, 500);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.manager.templates[0].name.as_str(), "api");
        assert_eq!(s.manager.templates[0].policy.target, 7);
        assert_eq!(s.manager.save_delay, Duration::from_millis(10));
    }

    #[test]
    fn the_lease_is_renewed_well_before_it_runs_out() {
        let args = |lease: &str| ServeArgs {
            owner_lease: Some(humantime::parse_duration(lease).unwrap()),
            ..Default::default()
        };
        let short = Settings::resolve(&args("2s")).unwrap().manager;
        assert_eq!(short.owner_lease, Duration::from_secs(2));
        assert!(short.heartbeat_interval * 3 <= short.owner_lease);
        assert!(short.maintain_interval <= short.heartbeat_interval);
        let long = Settings::resolve(&args("10m")).unwrap().manager;
        assert_eq!(
            long.heartbeat_interval,
            ManagerConfig::default().heartbeat_interval
        );
        let err = Settings::resolve(&args("10ms")).unwrap_err().to_string();
        assert!(err.contains("--owner-lease"), "{err}");
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        };
        let err = Settings::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("without --api-token"), "{err}");
        let with = ServeArgs {
            api_token: Some("s3cret".into()),
            ..args
        };
        assert!(Settings::resolve(&with).is_ok());
    }

    #[test]
    fn backend_options_can_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.toml");
        std::fs::write(
            &path,
            "store = \"s3://bucket\"\ns3_region = \"eu-west-1\"\n",
        )
        .unwrap();
        let resolved = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        });
        #[cfg(feature = "s3")]
        assert_eq!(
            resolved.unwrap().store_args.s3.s3_region.as_deref(),
            Some("eu-west-1")
        );
        #[cfg(not(feature = "s3"))]
        assert!(format!("{:#}", resolved.unwrap_err()).contains("`s3` feature"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = |t: &str| parse_templates(&[t.into()], 4).unwrap_err().to_string();
        assert!(bad("default").contains("NAME=TARGET"));
        assert!(bad("../x=3").contains("template"));
        assert!(bad("d=many").contains("target"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.toml");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let err = Settings::resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("no_such_setting"));
    }
}
