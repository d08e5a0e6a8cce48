//! Exclusive locks on files: the run lock (one process per run folder) and the short locks that
//! serialise choosing a run folder and deciding a dose.
//!
//! All are `flock`s (std `File::try_lock` / `File::lock`), so the operating system releases them
//! when their process dies, however it dies: a lock file whose lock is free belongs to nobody,
//! whatever it says. The file's content only *names* the holder (PID, host, start time, as JSON)
//! so that a refused second process can tell the operator who holds the run; it is emptied on a
//! clean exit, so a non-empty lock file found free was left by a process that died (taken over,
//! and the runner journals that). The file is never deleted: deleting it would let a process
//! that opened the old file and one that created a new one both "hold" the lock.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The run lock's file name in a run folder.
pub const RUN_LOCK: &str = ".lock";

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
    /// What the holder does (`lab run`, `lab report`).
    #[serde(default)]
    pub command: String,
}

impl Holder {
    /// This process, now.
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: host_name(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: command.to_string(),
        }
    }

    fn describe(&self) -> String {
        let what = if self.command.is_empty() {
            "lab"
        } else {
            &self.command
        };
        format!(
            "{what} (PID {} on {}, started {})",
            self.pid, self.host, self.started_at
        )
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `?`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "?".into())
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{path}: this run is in use by {} — wait for it to finish, or stop it (kill {}) and run the same command again to resume",
        holder.as_ref().map(Holder::describe).unwrap_or_else(|| "another process".into()),
        holder.as_ref().map(|h| h.pid.to_string()).unwrap_or_else(|| "it".into())
    )]
    Held {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error("lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read_holder(f: &mut File) -> Option<Holder> {
    let mut s = String::new();
    f.rewind().ok()?;
    f.read_to_string(&mut s).ok()?;
    serde_json::from_str(s.trim()).ok()
}

/// The run lock: held from start to exit; the file names its holder.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Take the lock of a run folder at once, or refuse naming its holder. Returns the lock and
    /// the previous holder when a dead process had left it (taken over).
    pub fn acquire(run_dir: &Path, me: &Holder) -> Result<(RunLock, Option<Holder>), LockError> {
        let path = run_dir.join(RUN_LOCK);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    holder: read_holder(&mut file),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let previous = read_holder(&mut file);
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        let mut text = serde_json::to_string(me).expect("holder serialises");
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok((RunLock { file, path }, previous))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    /// A clean exit empties the file (nobody holds it) before the OS drops the lock.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.sync_data();
        let _ = self.file.unlock();
    }
}

/// A short exclusive lock (choosing a run folder, deciding a dose), waited for: its holders
/// keep it for milliseconds to seconds.
#[derive(Debug)]
pub struct ShortLock {
    file: File,
}

impl ShortLock {
    /// Wait for the lock without blocking the async runtime.
    pub async fn acquire(path: &Path) -> Result<ShortLock, LockError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = open(path)?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ShortLock { file }),
                Err(TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for ShortLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let me = Holder::me("lab run");
        let (lock, previous) = RunLock::acquire(dir.path(), &me).unwrap();
        assert_eq!(previous, None);
        // flock locks belong to open files: a second open in this process is refused too.
        let err = RunLock::acquire(dir.path(), &Holder::me("lab report")).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, LockError::Held { holder: Some(h), .. } if *h == me),
            "{err:?}"
        );
        assert!(msg.contains(&format!("PID {}", me.pid)), "{msg}");
        assert!(msg.contains("wait for it to finish"), "{msg}");
        drop(lock);
        // Released cleanly: the next one takes it over from nobody.
        let (_again, previous) = RunLock::acquire(dir.path(), &me).unwrap();
        assert_eq!(previous, None);
    }

    #[test]
    fn a_lock_file_left_by_a_dead_holder_is_taken_over_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Holder {
            pid: 999_999,
            host: "bench-1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            command: "lab run".into(),
        };
        std::fs::write(
            dir.path().join(RUN_LOCK),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let (_lock, previous) = RunLock::acquire(dir.path(), &Holder::me("lab run")).unwrap();
        assert_eq!(previous, Some(dead));
        let now: Holder =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(RUN_LOCK)).unwrap())
                .unwrap();
        assert_eq!(now.pid, std::process::id());
    }

    #[tokio::test]
    async fn a_short_lock_waits_for_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        let first = ShortLock::acquire(&path).await.unwrap();
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { ShortLock::acquire(&path).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the second waits while the first holds it"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
