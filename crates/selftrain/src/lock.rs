//! One writer per run folder: `run.lock`, held with an OS file lock for as long as the run
//! lasts. The kernel drops the lock when the process ends however it ends (kill -9
//! included), so a lock left by a dead run is simply taken over; the file keeps the holder's
//! pid and host for the message a second writer gets.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock of one folder; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    pub path: PathBuf,
}

/// The lock file of a folder.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("run.lock")
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

impl RunLock {
    /// Takes the folder's lock (creating the folder), or fails naming the process that
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let at = |e: &dyn std::fmt::Display, p: &Path| Error::msg(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| at(&e, dir))?;
        let path = lock_path(dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| at(&e, &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::msg(format!(
                    "{} is in use by another pupil process ({}); wait for it to end or use another --out",
                    dir.display(),
                    holder.trim()
                )));
            }
            Err(TryLockError::Error(e)) => {
                // A file system without locks (some network mounts): run, but say so.
                eprintln!(
                    "WARNING: {}: cannot lock ({e}); nothing stops a second run from writing here",
                    path.display()
                );
            }
        }
        let me = format!("pid {} on {}\n", std::process::id(), host());
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(me.as_bytes())?;
            f.flush()
        };
        write(&mut file).map_err(|e| at(&e, &path))?;
        Ok(RunLock { file, path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(d.path()).unwrap();
        let e = RunLock::acquire(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        RunLock::acquire(d.path()).unwrap();
    }
}
