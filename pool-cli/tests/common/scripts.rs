//! Provisioner scripts for `--provisioner exec:COMMAND`, written to a test's folder.

use std::path::Path;

/// What a provision run of the script does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Provision {
    /// Prints a fresh id (`<template>-<nanos>-<pid>`) and metadata, and appends the id
    /// to `provisioned` in the folder.
    Ok,
    /// Prints `no quota left` on standard error and exits 3.
    Fail,
    /// Prints something that is not JSON.
    Garbage,
    /// Sleeps for five seconds.
    Hang,
}

/// Writes a provisioner script to `dir` and returns its `exec:` spec.
///
/// A recycle run appends the project id to `recycled` in `dir` and exits with
/// `recycle_exit` (non-zero keeps recycled projects in the pool, as a failing destroy
/// would).
pub(crate) fn exec_provisioner(dir: &Path, provision: Provision, recycle_exit: u8) -> String {
    let provision = match provision {
        Provision::Ok => {
            r#"id="$2-$(date +%s%N)-$$"
    echo "$id" >> "$dir/provisioned"
    printf '{"id":"%s","metadata":{"via":"exec","template":"%s"}}\n' "$id" "$2""#
        }
        Provision::Fail => "echo 'no quota left' >&2\n    exit 3",
        Provision::Garbage => "echo 'this is not json'",
        Provision::Hang => "sleep 5",
    };
    let script = format!(
        "#!/bin/sh\n\
         dir='{dir}'\n\
         case \"$1\" in\n\
         provision)\n    {provision}\n    ;;\n\
         recycle)\n    echo \"$2\" >> \"$dir/recycled\"\n    exit {recycle_exit}\n    ;;\n\
         esac\n",
        dir = dir.display()
    );
    let path = dir.join("provisioner.sh");
    std::fs::write(&path, script).expect("write the provisioner script");
    // Run through `sh`, so the script needs no exec bit and is never executed while a
    // forked child of another test still holds it open for writing.
    format!("exec:sh {}", path.display())
}

/// The lines of file `name` in `dir` (empty when it does not exist).
pub(crate) fn lines(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
