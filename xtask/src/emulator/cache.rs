//! The folder where xtask installs the emulators, outside the repository.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cargo::workspace_root;

/// Where the emulators are installed: `$POOL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/project-pool`, else `~/.cache/project-pool`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    let dir = resolve(
        std::env::var_os("POOL_CACHE_DIR").map(PathBuf::from),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )?;
    let root = workspace_root();
    if dir.starts_with(&root) {
        bail!(
            "the emulator cache {} is inside the repository {}; point POOL_CACHE_DIR elsewhere",
            dir.display(),
            root.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The cache folder chosen from the three environment values, most specific first.
fn resolve(
    pool_cache: Option<PathBuf>,
    xdg_cache: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    let non_empty = |path: Option<PathBuf>| path.filter(|path| !path.as_os_str().is_empty());
    if let Some(dir) = non_empty(pool_cache) {
        return Ok(dir);
    }
    if let Some(dir) = non_empty(xdg_cache) {
        return Ok(dir.join("project-pool"));
    }
    match non_empty(home) {
        Some(home) => Ok(home.join(".cache").join("project-pool")),
        None => bail!("none of POOL_CACHE_DIR, XDG_CACHE_HOME or HOME is set"),
    }
}

/// An exclusive lock on one installation in the cache, so concurrent xtask runs do not
/// install into the same folder at once. The lock is released when this value is
/// dropped or the process exits.
pub(crate) struct InstallLock {
    _file: File,
}

impl InstallLock {
    /// Blocks until the lock named `name` in `cache` is held.
    pub(crate) fn acquire(cache: &Path, name: &str) -> Result<Self> {
        let path = cache.join(format!(".{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// Whether the install marker at `marker` records exactly `version`.
pub(crate) fn marker_matches(marker: &Path, version: &str) -> bool {
    std::fs::read_to_string(marker).is_ok_and(|text| text.trim() == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_setting_wins() {
        let some = |path: &str| Some(PathBuf::from(path));
        assert_eq!(
            resolve(some("/p"), some("/x"), some("/h")).unwrap(),
            PathBuf::from("/p")
        );
        assert_eq!(
            resolve(None, some("/x"), some("/h")).unwrap(),
            PathBuf::from("/x/project-pool")
        );
        assert_eq!(
            resolve(some(""), None, some("/h")).unwrap(),
            PathBuf::from("/h/.cache/project-pool")
        );
        assert!(resolve(None, None, None).is_err());
    }

    #[test]
    fn a_marker_must_name_the_same_version() {
        let path = std::env::temp_dir().join(format!("xtask-marker-{}", std::process::id()));
        assert!(!marker_matches(&path, "1.0"));
        std::fs::write(&path, "1.0\n").unwrap();
        assert!(marker_matches(&path, "1.0"));
        assert!(!marker_matches(&path, "1.1"));
        std::fs::remove_file(path).unwrap();
    }
}
