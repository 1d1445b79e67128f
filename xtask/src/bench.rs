//! `cargo xtask bench`: every benchmark of the workspace.

use anyhow::Result;

use crate::cargo::{Steps, cargo};

/// Runs `cargo bench --workspace`, passing `args` after `--` on to it.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let extra = match args.split_first() {
        None => &[][..],
        Some((first, rest)) if first == "--" => rest,
        Some((first, _)) => anyhow::bail!("unknown option `{first}` for `bench`"),
    };
    let mut steps = Steps::default();
    let result = steps.run("bench", cargo(["bench", "--workspace"]).args(extra));
    steps.print_summary();
    result
}
