//! An emulator process that cannot outlive xtask.
//!
//! The emulator runs under a small `sh` watchdog whose standard input is a pipe from
//! xtask. When xtask closes the pipe, or dies in any way (Ctrl-C, `kill -9`), the
//! watchdog reads end-of-file and terminates the emulator: SIGTERM, then SIGKILL after
//! five seconds. The watchdog exits with the emulator's status, so an emulator that
//! crashes is seen as an exited child. Everything runs in its own process group, which a
//! last-resort SIGKILL to the group clears if the watchdog itself does not finish.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The watchdog: `$1...` is the emulator command line.
const WATCHDOG: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
(
    read -r _ <&3
    kill -TERM "$child" 2>/dev/null
    i=0
    while kill -0 "$child" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$child" 2>/dev/null
) </dev/null &
watcher=$!
exec 3<&-
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// How long a stop waits for the watchdog before killing the whole process group.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running emulator; dropping it stops the emulator and waits for it.
pub(crate) struct Supervised {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Whether an early exit has been reported already, so it is reported once.
    exit_reported: bool,
}

impl Supervised {
    /// Starts `program args` under the watchdog, in `dir`, logging to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
        log: PathBuf,
    ) -> Result<Self> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("{name}-watchdog"))
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name,
            child,
            log,
            exit_reported: false,
        })
    }

    /// The exit status if the emulator has already stopped by itself.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// If the emulator has stopped by itself, a report of how, with the end of its log.
    /// Each early exit is reported once, here or when the value is dropped.
    pub(crate) fn exit_report(&mut self) -> Option<String> {
        let status = self.exited()?;
        self.exit_reported = true;
        Some(format!(
            "{} stopped by itself ({status}); last log lines:\n{}",
            self.name,
            self.log_tail(30)
        ))
    }

    /// The last `lines` lines of the emulator's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The emulator's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Stops the emulator and waits for it; returns how it ended.
    fn stop(&mut self) -> Option<ExitStatus> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: {} did not stop in time; killing its process group",
            self.name
        );
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).status();
        if !matches!(killed, Ok(status) if status.success()) {
            let _ = self.child.kill();
        }
        self.child.wait().ok()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let reported_before = self.exit_reported;
        if let Some(report) = self.exit_report() {
            if !reported_before {
                eprintln!("xtask: {report}");
            }
            return;
        }
        match self.stop() {
            Some(_) => eprintln!("xtask: stopped {}", self.name),
            None => eprintln!("xtask: could not confirm that {} stopped", self.name),
        }
    }
}

/// The last `lines` lines of the file at `path` (at most the last 64 KiB are read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pid_alive(pid: &str) -> bool {
        Path::new("/proc").join(pid).exists()
    }

    #[test]
    fn dropping_stops_the_supervised_process() {
        let dir = temp_dir("supervised-drop");
        let args = vec!["-c".to_owned(), "echo $$ > pid; exec sleep 600".to_owned()];
        let supervised =
            Supervised::spawn("sleeper", Path::new("sh"), &args, &dir, dir.join("log")).unwrap();
        let pid_file = dir.join("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned();
        assert!(pid_alive(&pid), "the supervised process should be running");
        drop(supervised);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(&pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        assert!(!pid_alive(&pid), "process {pid} outlived its supervisor");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_crashed_process_is_seen_as_exited_with_its_log() {
        let dir = temp_dir("supervised-crash");
        let args = vec!["-c".to_owned(), "echo boom >&2; exit 3".to_owned()];
        let mut supervised =
            Supervised::spawn("crasher", Path::new("sh"), &args, &dir, dir.join("log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = None;
        while status.is_none() && Instant::now() < deadline {
            status = supervised.exited();
            sleep(Duration::from_millis(20));
        }
        assert_eq!(status.and_then(|status| status.code()), Some(3));
        assert_eq!(supervised.log_tail(5), "boom");
        let report = supervised.exit_report().unwrap();
        assert!(report.starts_with("crasher stopped by itself"), "{report}");
        assert!(report.ends_with("\nboom"), "{report}");
        drop(supervised);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
