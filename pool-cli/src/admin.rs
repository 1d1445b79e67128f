//! `pool status`, `pool export` and `pool import`: reading and migrating any store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use pool_core::{Pool, PoolSnapshot};
use pool_storage::{PoolWrite, Precondition};

use crate::stores::{self, StoreArgs};

/// `pool status` options.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The store to read.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pool export` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// The store to read.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `pool import` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The snapshot file written by `pool export`.
    pub file: PathBuf,
    /// The store to write.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Replace a pool that is already stored there.
    #[arg(long)]
    pub force: bool,
}

/// Opens a store to read it; a SQLite file that does not exist is an error, not created.
async fn open_existing(args: &StoreArgs) -> anyhow::Result<stores::Backend> {
    if let Some(path) = stores::missing_database(args.url()) {
        bail!(
            "no pool database at {} (reading a store creates nothing)",
            path.display()
        );
    }
    stores::open(args.url(), args).await
}

async fn load(args: &StoreArgs) -> anyhow::Result<PoolSnapshot> {
    let backend = open_existing(args).await?;
    load_from(&backend, args).await
}

async fn load_from(backend: &stores::Backend, args: &StoreArgs) -> anyhow::Result<PoolSnapshot> {
    let loaded = backend
        .pool
        .load()
        .await
        .with_context(|| format!("loading {}", args.url()))?;
    let Some(v) = loaded else {
        bail!("no pool is stored at {}", args.url())
    };
    Ok(v.value)
}

/// Prints counts per state and template.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let snapshot = load(&args.store).await?;
    let pool = Pool::from_snapshot(snapshot.clone())?;
    if args.json {
        let out = serde_json::json!({
            "version": pool.version(),
            "projects": pool.len(),
            "owners": snapshot.owners,
            "templates": pool.counts_by_template(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "store {}  version {}  projects {}  owners {}",
        args.store.url(),
        pool.version(),
        pool.len(),
        snapshot.owners.len()
    );
    print!("{:<20}", "template");
    for kind in pool_core::ALL_KINDS {
        print!(" {:>12}", kind.to_string());
    }
    println!();
    for (template, counts) in pool.counts_by_template() {
        print!("{:<20}", template.as_str());
        for kind in pool_core::ALL_KINDS {
            print!(" {:>12}", counts.get(kind));
        }
        println!();
    }
    Ok(())
}

/// The key of an export that carries each project's metadata document beside the
/// snapshot's own fields, so an export still reads as a plain snapshot.
const METADATA_KEY: &str = "project_metadata";

/// Writes the stored pool as a JSON snapshot, with every project's metadata document.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let backend = open_existing(&args.store).await?;
    let snapshot = load_from(&backend, &args.store).await?;
    let mut documents = serde_json::Map::new();
    for record in &snapshot.projects {
        let got = backend.metadata.get_metadata(&record.id).await;
        let got = got.with_context(|| format!("reading the metadata of {}", record.id))?;
        if let Some(v) = got {
            documents.insert(record.id.to_string(), v.value);
        }
    }
    let mut doc = serde_json::to_value(&snapshot)?;
    doc[METADATA_KEY] = serde_json::Value::Object(documents);
    let bytes = serde_json::to_vec_pretty(&doc)?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    eprintln!(
        "exported {} projects at version {}",
        snapshot.projects.len(),
        snapshot.pool_version
    );
    Ok(())
}

#[derive(serde::Deserialize)]
struct ExportedMetadata {
    #[serde(default)]
    project_metadata: std::collections::BTreeMap<pool_core::ProjectId, serde_json::Value>,
}

/// Stores a snapshot into an empty store (or over a stored pool with `--force`).
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut snapshot = PoolSnapshot::from_json(&bytes)
        .with_context(|| format!("{} is not a pool snapshot", args.file.display()))?;
    Pool::from_snapshot(snapshot.clone())
        .with_context(|| format!("{} is not a consistent pool", args.file.display()))?;
    let backend = stores::open(args.store.url(), &args.store).await?;
    let existing = backend
        .pool
        .load()
        .await
        .with_context(|| format!("loading {}", args.store.url()))?;
    let precondition = match existing {
        None => Precondition::CreateOnly,
        Some(v) if args.force => {
            snapshot.pool_version = snapshot.pool_version.max(v.value.pool_version + 1);
            Precondition::Matches(v.revision)
        }
        Some(v) => bail!(
            "{} already holds a pool ({} projects, version {}); pass --force to replace it",
            args.store.url(),
            v.value.projects.len(),
            v.value.pool_version
        ),
    };
    let documents: ExportedMetadata = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} has malformed project metadata", args.file.display()))?;
    for (id, doc) in &documents.project_metadata {
        let put = backend.metadata.put_metadata(id, doc, None).await;
        put.with_context(|| format!("writing the metadata of {id}"))?;
    }
    let count = snapshot.projects.len();
    let version = snapshot.pool_version;
    backend
        .pool
        .save(&PoolWrite::Full(snapshot), &precondition)
        .await
        .with_context(|| format!("writing {}", args.store.url()))?;
    eprintln!(
        "imported {count} projects at version {version} into {}",
        args.store.url()
    );
    Ok(())
}
