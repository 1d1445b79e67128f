//! The provisioners `pool serve` can run: a built-in local one and `exec:COMMAND`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pool_core::{PoolSnapshot, ProjectId, TemplateName};
use pool_runtime::{ProvisionError, Provisioned, Provisioner};
use rand::Rng;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Mints projects locally after a delay: ids shaped `<template>-<number>-<5 hex>` and a
/// metadata document. For trying the pool out and for load tests.
#[derive(Debug)]
pub struct LocalProvisioner {
    delay: Duration,
    next: AtomicU64,
}

impl LocalProvisioner {
    /// A provisioner that takes `delay` per project, numbering after the highest number
    /// already in `existing`.
    pub fn new(delay: Duration, existing: Option<&PoolSnapshot>) -> Self {
        let highest = existing
            .map(|s| {
                s.projects
                    .iter()
                    .filter_map(|r| number_in(r.id.as_str()))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        Self {
            delay,
            next: AtomicU64::new(highest + 1),
        }
    }
}

/// The `<number>` of an id shaped `<template>-<number>-<hex>`.
fn number_in(id: &str) -> Option<u64> {
    let mut parts = id.rsplitn(3, '-');
    let _hex = parts.next()?;
    parts.next()?.parse().ok()
}

#[async_trait]
impl Provisioner for LocalProvisioner {
    async fn provision(&self, template: &TemplateName) -> Result<Provisioned, ProvisionError> {
        tokio::time::sleep(self.delay).await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let hex: u32 = rand::rng().random_range(0..0x10_0000);
        let id = ProjectId::new(format!("{template}-{n}-{hex:05x}"))
            .map_err(|e| ProvisionError(format!("template name makes an invalid id: {e}")))?;
        let metadata = serde_json::json!({
            "project_id": id.as_str(),
            "template": template.as_str(),
            "backend_url": format!("http://{id}.localhost/"),
            "provisioner": "local",
        });
        Ok(Provisioned { id, metadata })
    }

    async fn recycle(&self, _: &ProjectId, _: &TemplateName) -> Result<(), ProvisionError> {
        Ok(())
    }
}

/// Runs a user command per provision and per recycle.
///
/// Provision runs `sh -c 'COMMAND "$@"' pool provision TEMPLATE`, which must print one
/// JSON object `{"id": "...", "metadata": {...}}` on standard output and exit 0.
/// Recycle runs `... pool recycle PROJECT_ID TEMPLATE` and must exit 0. A non-zero exit,
/// a timeout or malformed output is a failed attempt, like any provisioner failure.
#[derive(Debug)]
pub struct ExecProvisioner {
    command: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ExecOutput {
    id: String,
    #[serde(default)]
    metadata: serde_json::Value,
}

const MAX_OUTPUT: u64 = 1 << 20;

impl ExecProvisioner {
    /// A provisioner running `command`, killing any run that takes longer than `timeout`.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self {
            command: command.into(),
            timeout,
        }
    }

    async fn run(&self, args: &[&str]) -> Result<Vec<u8>, ProvisionError> {
        let script = format!("{} \"$@\"", self.command);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("pool")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| ProvisionError(format!("cannot run {:?}: {e}", self.command)))?;
        let mut group = child.id().map(|pid| ProcessGroup { pid, armed: true });
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| ProvisionError("no stdout".into()))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| ProvisionError("no stderr".into()))?;
        let work = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (mut limited_out, mut limited_err) = (
                (&mut stdout).take(MAX_OUTPUT),
                (&mut stderr).take(MAX_OUTPUT),
            );
            let read_out = limited_out.read_to_end(&mut out);
            let read_err = limited_err.read_to_end(&mut err);
            let (a, b, status) = tokio::join!(read_out, read_err, child.wait());
            a.and(b).and(status).map(|status| (status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(done)) => {
                if let Some(g) = group.as_mut() {
                    g.armed = false;
                }
                done
            }
            Ok(Err(e)) => return Err(ProvisionError(format!("running {:?}: {e}", self.command))),
            Err(_) => {
                return Err(ProvisionError(format!(
                    "{:?} took longer than {:?}",
                    self.command, self.timeout
                )));
            }
        };
        if !status.success() {
            let tail = String::from_utf8_lossy(&err);
            let tail: String = tail
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(ProvisionError(format!(
                "{:?} {} exited with {status}: {}",
                self.command,
                args[0],
                tail.trim()
            )));
        }
        Ok(out)
    }
}

#[async_trait]
impl Provisioner for ExecProvisioner {
    async fn provision(&self, template: &TemplateName) -> Result<Provisioned, ProvisionError> {
        let out = self.run(&["provision", template.as_str()]).await?;
        let parsed: ExecOutput = serde_json::from_slice(&out)
            .map_err(|e| ProvisionError(format!("provision printed malformed JSON: {e}")))?;
        let id = ProjectId::new(parsed.id)
            .map_err(|e| ProvisionError(format!("provision printed a bad id: {e}")))?;
        Ok(Provisioned {
            id,
            metadata: parsed.metadata,
        })
    }

    async fn recycle(
        &self,
        project: &ProjectId,
        template: &TemplateName,
    ) -> Result<(), ProvisionError> {
        self.run(&["recycle", project.as_str(), template.as_str()])
            .await
            .map(|_| ())
    }
}

/// The process group of one command run: whatever the command started is stopped with
/// it when the run ends early (a timeout, or a shutdown that abandons the provision).
/// A command that finished on its own keeps whatever it started in the background.
struct ProcessGroup {
    pid: u32,
    armed: bool,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The group is the command's alone (`process_group(0)`).
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
    }
}

/// The provisioner a `--provisioner` value names: `local` or `exec:COMMAND`.
pub fn from_spec(
    spec: &str,
    local_delay: Duration,
    timeout: Duration,
    existing: Option<&PoolSnapshot>,
) -> anyhow::Result<Arc<dyn Provisioner>> {
    if spec == "local" {
        return Ok(Arc::new(LocalProvisioner::new(local_delay, existing)));
    }
    if let Some(command) = spec.strip_prefix("exec:") {
        anyhow::ensure!(!command.trim().is_empty(), "exec: needs a command");
        return Ok(Arc::new(ExecProvisioner::new(command, timeout)));
    }
    anyhow::bail!("unknown provisioner {spec:?}: use `local` or `exec:COMMAND`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_after_the_highest_existing_one() {
        assert_eq!(number_in("default-17-0abcd"), Some(17));
        assert_eq!(number_in("my-template-3-fffff"), Some(3));
        assert_eq!(number_in("odd"), None);
    }

    #[tokio::test]
    async fn local_ids_have_the_documented_shape() {
        let p = LocalProvisioner::new(Duration::ZERO, None);
        let t = TemplateName::new("default").unwrap();
        let a = p.provision(&t).await.unwrap();
        let parts: Vec<&str> = a.id.as_str().split('-').collect();
        assert_eq!(parts[..2], ["default", "1"]);
        assert_eq!(parts[2].len(), 5);
        assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.metadata["project_id"], a.id.as_str());
    }

    #[tokio::test]
    async fn a_timed_out_command_takes_what_it_started_with_it() {
        let dir = std::env::temp_dir().join(format!("pool-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("child.pid");
        let cmd = format!(
            "f() {{ sleep 30 & echo $! > {}; wait; }}; f",
            pid_file.display()
        );
        let slow = ExecProvisioner::new(cmd, Duration::from_millis(300));
        let t = TemplateName::new("web").unwrap();
        assert!(slow.provision(&t).await.is_err());
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        });
        assert!(gone, "the command's child {pid} outlived the timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn exec_provisioner_reads_json_and_reports_failures() {
        let t = TemplateName::new("web").unwrap();
        let ok = ExecProvisioner::new(
            r#"f() { echo "{\"id\":\"$2-7-abcde\",\"metadata\":{\"via\":\"$1\"}}"; }; f"#,
            Duration::from_secs(5),
        );
        let got = ok.provision(&t).await.unwrap();
        assert_eq!(got.id.as_str(), "web-7-abcde");
        assert_eq!(got.metadata["via"], "provision");
        ok.recycle(&got.id, &t).await.unwrap();

        let failing = ExecProvisioner::new("echo boom >&2; exit 3", Duration::from_secs(5));
        let e = failing.provision(&t).await.unwrap_err();
        assert!(e.0.contains("boom") && e.0.contains("3"), "{e}");

        let garbage = ExecProvisioner::new("echo not-json", Duration::from_secs(5));
        assert!(
            garbage
                .provision(&t)
                .await
                .unwrap_err()
                .0
                .contains("malformed")
        );

        let escaping = ExecProvisioner::new(
            r#"f() { echo '{"id":"../etc"}'; }; f"#,
            Duration::from_secs(5),
        );
        assert!(
            escaping
                .provision(&t)
                .await
                .unwrap_err()
                .0
                .contains("bad id")
        );

        let slow = ExecProvisioner::new("f() { sleep 5; }; f", Duration::from_millis(100));
        assert!(
            slow.provision(&t)
                .await
                .unwrap_err()
                .0
                .contains("longer than")
        );
    }
}
