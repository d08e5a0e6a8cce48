//! The MDM store's files are owner-only (0600): they hold push tokens, PushMagic, unlock tokens
//! and every raw device report.
//!
//! SQLite creates a new database with mode 0644 (less the umask), and its `-wal` and `-shm`
//! companions with the database file's own permissions (`findCreateFileMode` in `os_unix.c`,
//! which also `fchmod`s them to match). So creating the empty main file with 0600 before SQLite
//! opens it makes all three owner-only, without touching the process-wide umask (the server is
//! multi-threaded). An existing file keeps the mode its owner gave it.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Create `path` empty with mode 0600 unless it exists (SQLite initialises an empty file).
pub fn create_owner_only(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_store_and_its_wal_and_shm_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mdm.sqlite");
        let s = crate::mdm_server::Store::open(&db).unwrap();
        // A write creates the -wal; WAL mode keeps -shm open alongside.
        s.enqueue(&["U".to_string()], "A", "SecurityInfo", b"secret")
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("mdm.sqlite{suffix}"));
            assert!(p.exists(), "{} exists while the store is open", p.display());
            assert_eq!(mode(&p), 0o600, "{} is owner-only", p.display());
        }
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        create_owner_only(&p).unwrap();
        assert_eq!(mode(&p), 0o640);
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }
}
