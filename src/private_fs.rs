//! Owner-only files and folders. Run folders hold device identities and raw evidence, the MDM
//! store push tokens and raw reports, API-key files secrets: each is created 0600 (folders 0700)
//! from the start, never created open and narrowed afterwards. One place for it, so that every
//! writer gets the same rule.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Create (or truncate) a file only its owner can read; an existing file is narrowed to 0600 too.
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Write a whole file, owner-only, and sync it.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_private(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Create a folder (and its parents) only its owner can enter.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Create `path` empty with mode 0600 unless it exists, for a file another library then opens:
/// SQLite creates a new database with mode 0644 (less the umask), and its `-wal` and `-shm`
/// companions with the database file's own permissions (`findCreateFileMode` in `os_unix.c`),
/// so creating the empty main file first makes all three owner-only without touching the
/// process-wide umask (the server is multi-threaded). An existing file keeps the mode its owner
/// gave it.
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

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_folders_are_owner_only_even_when_they_existed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
        let p = sub.join("f");
        std::fs::write(&p, b"old content").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
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
        let q = dir.path().join("g");
        create_owner_only(&q).unwrap();
        assert_eq!(mode(&q), 0o600);
    }
}
