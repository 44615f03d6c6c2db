//! What survives a crash of the host: the PID file, one record per
//! supervised service in the state directory, and `reap_orphans`, which a
//! later run uses to stop what a crashed host left behind.
//!
//! A record lives at `STATE_DIR/services/NAME.state` as `key=value` lines
//! (format below). It is written to a temporary file and renamed into
//! place, so a crash at any moment leaves the old or the new record, never
//! a torn one.
//!
//! Identity rule: a recorded process is "still the same process" when its
//! pid exists, is not a zombie, and its start time in clock ticks since boot
//! (/proc/PID/stat field 22) equals the recorded one, in the same boot (the
//! recorded boot id equals /proc/sys/kernel/random/boot_id). Ticks and boot
//! id do not move when NTP steps the wall clock, unlike the millisecond
//! start time, which is derived from the boot time in /proc/stat. Records
//! without ticks fall back to `same_process(pid, start_ms)`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process;

const RECORD_HEADER: &str = "devrig-state 1";
const PID_FILE: &str = "devrig.pid";
const SERVICES_DIR: &str = "services";

/// `state_dir/devrig.pid`.
pub fn pid_file_path(state_dir: &Path) -> PathBuf {
    state_dir.join(PID_FILE)
}

/// Refuses an empty state directory, which every function would otherwise
/// take as the current directory.
pub fn check_state_dir(state_dir: &Path) -> Result<()> {
    if state_dir.as_os_str().is_empty() {
        return Err(Error::invalid("state directory \"\" is empty"));
    }
    Ok(())
}

/// Creates `state_dir` if needed, as every state-directory function does
/// (so a failure is DEVRIG_E_IO, even when a parent is missing).
fn create_state_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::Io(format!("cannot create state directory {dir:?}: {e}")))
}

/// Creates `state_dir` if needed and writes the calling process's pid to
/// the PID file (atomically), as devrig did: the decimal pid, no newline.
pub fn write_pid_file(state_dir: &Path) -> Result<()> {
    check_state_dir(state_dir)?;
    create_state_dir(state_dir)?;
    let content = std::process::id().to_string();
    write_atomic(&pid_file_path(state_dir), content.as_bytes())
}

/// Removes the PID file; succeeds if it is already absent.
pub fn remove_pid_file(state_dir: &Path) -> Result<()> {
    check_state_dir(state_dir)?;
    let path = pid_file_path(state_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {path:?}"), e)),
    }
}

/// Writes `data` to `path` through a temporary file in the same directory
/// and a rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("cannot write {path:?}"), e)
    })
}

/// True if `name` can be used as a file name on its own: 1 to 128 bytes of
/// letters, digits, `.`, `_`, `-`, `@`, `+`, not starting with `.`.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// Refuses a service name that is not a safe file-name component.
pub fn check_service_name(name: &str) -> Result<()> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "service name {name:?} is not a safe file name (1-128 of A-Z a-z 0-9 . _ - @ +, not starting with '.')"
        )))
    }
}

/// The phase written to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    Exited,
    Backoff,
    Stopping,
    Stopped,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Exited => "exited",
            Phase::Backoff => "backoff",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

/// One service's record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub service: String,
    /// The service's current child, 0 when there is none.
    pub pid: u32,
    pub start_ms: i64,
    pub start_ticks: u64,
    pub boot_id: String,
    pub phase: String,
    pub last_exit_code: i32,
    pub last_signal: i32,
    /// The environment variable that marks every process of the spawn.
    pub tag: String,
    /// The process that supervised it.
    pub host_pid: u32,
    pub updated_ms: i64,
}

impl Record {
    pub fn encode(&self) -> String {
        format!(
            "{RECORD_HEADER}\nservice={}\npid={}\nstart_ms={}\nstart_ticks={}\nboot_id={}\nphase={}\nlast_exit_code={}\nlast_signal={}\ntag={}\nhost_pid={}\nupdated_ms={}\n",
            self.service,
            self.pid,
            self.start_ms,
            self.start_ticks,
            self.boot_id,
            self.phase,
            self.last_exit_code,
            self.last_signal,
            self.tag,
            self.host_pid,
            self.updated_ms
        )
    }

    pub fn decode(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != RECORD_HEADER {
            return None;
        }
        let mut r = Record::default();
        for line in lines {
            let (k, v) = line.split_once('=')?;
            match k {
                "service" => r.service = v.to_string(),
                "pid" => r.pid = v.parse().ok()?,
                "start_ms" => r.start_ms = v.parse().ok()?,
                "start_ticks" => r.start_ticks = v.parse().ok()?,
                "boot_id" => r.boot_id = v.to_string(),
                "phase" => r.phase = v.to_string(),
                "last_exit_code" => r.last_exit_code = v.parse().ok()?,
                "last_signal" => r.last_signal = v.parse().ok()?,
                "tag" => r.tag = v.to_string(),
                "host_pid" => r.host_pid = v.parse().ok()?,
                "updated_ms" => r.updated_ms = v.parse().ok()?,
                _ => {} // newer writers may add keys
            }
        }
        Some(r)
    }

    /// The identity rule of this module's documentation.
    pub fn is_alive_same_process(&self) -> bool {
        let Ok(pid) = process::check_pid(self.pid) else {
            return false;
        };
        if self.start_ticks != 0 && !self.boot_id.is_empty() {
            if self.boot_id != process::boot_id() {
                return false;
            }
            return matches!(process::read_stat(pid),
                Some(s) if !s.is_dead() && s.start_ticks == self.start_ticks);
        }
        process::same_process(self.pid, self.start_ms)
    }
}

pub(crate) fn record_path(state_dir: &Path, service: &str) -> PathBuf {
    state_dir
        .join(SERVICES_DIR)
        .join(format!("{service}.state"))
}

/// Writes records for one supervisor.
#[derive(Debug)]
pub(crate) struct StateWriter {
    path: PathBuf,
}

impl StateWriter {
    pub fn new(state_dir: &Path, service: &str) -> Result<Self> {
        let dir = state_dir.join(SERVICES_DIR);
        create_state_dir(&dir)?;
        Ok(StateWriter {
            path: record_path(state_dir, service),
        })
    }

    /// A writer for `state_dir`, without touching the disk: a directory
    /// that cannot be created shows up as an error of `write`.
    pub fn at(state_dir: &Path, service: &str) -> Self {
        StateWriter {
            path: record_path(state_dir, service),
        }
    }

    /// Writes the record atomically, creating the directory again if it
    /// has been removed.
    pub fn write(&self, record: &Record) -> Result<()> {
        let data = record.encode();
        match write_atomic(&self.path, data.as_bytes()) {
            Err(Error::NotFound(_)) => {
                if let Some(dir) = self.path.parent() {
                    fs::create_dir_all(dir).map_err(|e| {
                        Error::io(format!("cannot create state directory {dir:?}"), e)
                    })?;
                }
                write_atomic(&self.path, data.as_bytes())
            }
            r => r,
        }
    }
}

/// After a host crash: stops every recorded service whose process is still
/// the same process (identity rule above), with its whole tree and every
/// process carrying its spawn tag, then removes its record. Returns how many
/// services were reaped (had anything left alive). A recorded pid that now belongs to another process
/// is never touched.
///
/// Call it before starting supervisors on `state_dir`: a record of a
/// supervisor that is running right now looks exactly like an orphan.
pub fn reap_orphans(state_dir: &Path, grace: Duration) -> Result<u32> {
    check_state_dir(state_dir)?;
    if !state_dir.is_dir() {
        let what = if state_dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Error::NotFound(format!(
            "state directory {state_dir:?} {what}"
        )));
    }
    let dir = state_dir.join(SERVICES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("cannot read {dir:?}"), e)),
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("state") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Some(record) = Record::decode(&text) else {
            continue;
        };
        let same_boot = record.boot_id.is_empty() || record.boot_id == process::boot_id();
        // A service counts as reaped when anything of it was still alive:
        // its recorded process, or processes carrying its spawn tag (the
        // main process may have died with the host, leaving descendants).
        let mut found = false;
        if record.is_alive_same_process() {
            process::kill_tree(record.pid, grace)?;
            found = true;
        }
        if same_boot && !record.tag.is_empty() {
            for t in process::find_tagged(record.tag.as_bytes()) {
                process::kill_tree(t.pid as u32, grace)?;
                found = true;
            }
        }
        if found {
            reaped += 1;
        }
        let _ = fs::remove_file(&path);
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            service: "web".into(),
            pid: 42,
            start_ms: 1_700_000_000_000,
            start_ticks: 12345,
            boot_id: "abc".into(),
            phase: "running".into(),
            last_exit_code: -1,
            last_signal: 9,
            tag: "DEVRIG_SPAWN_1_2_3".into(),
            host_pid: 7,
            updated_ms: 5,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        assert_eq!(Record::decode("nonsense"), None);
        assert_eq!(Record::decode("devrig-state 1\npid=x\n"), None);
    }

    #[test]
    fn safe_names() {
        for ok in ["web", "api-1", "my_service", "svc.v2", "a@b+c", "X"] {
            assert!(is_safe_name(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(check_service_name("../x")
            .unwrap_err()
            .message()
            .contains("\"../x\""));
    }
}
