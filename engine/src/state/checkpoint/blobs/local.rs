//! Checkpoints in a local (or mounted) directory.
//!
//! A key is a path below the root. Every write goes to a hidden temporary file that is
//! synced, then renamed (or, for `create`, hard-linked: that fails if the name is
//! taken) into place, and the directory is synced: a crash leaves the old object or the
//! new one, never half of one. `update` holds an exclusive lock on a hidden lock file
//! beside the object (`flock`: every process on the machine, and NFS with lock support)
//! across its read-compare-rename.

use super::{Blob, BlobError, Blobs, Version};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A store in a directory.
#[derive(Debug)]
pub(crate) struct Local {
    root: PathBuf,
}

/// Distinguishes the temporary files of one process's concurrent writes.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Local {
    /// The store rooted at `root` (created on first write).
    pub(crate) fn new(root: &Path) -> Self {
        Local {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.split('/').filter(|s| !s.is_empty()));
        p
    }

    /// Writes `data` to a synced temporary file beside `path` and returns its name.
    fn write_tmp(
        &self,
        op: &'static str,
        key: &str,
        path: &Path,
        data: &[u8],
    ) -> Result<PathBuf, BlobError> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| fail(op, key, &e))?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(op, key, &e));
        }
        Ok(tmp)
    }
}

impl Blobs for Local {
    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn get(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        match std::fs::read(self.path(key)) {
            Ok(data) => Ok(Some(Blob {
                version: version_of(&data),
                data: data.into(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail("reading", key, &e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), BlobError> {
        let path = self.path(key);
        let tmp = self.write_tmp("writing", key, &path, data)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("writing", key, &e));
        }
        sync_parent(&path).map_err(|e| fail("writing", key, &e))
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<Version, BlobError> {
        let path = self.path(key);
        let tmp = self.write_tmp("creating", key, &path, data)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BlobError::Conflict { key: key.into() });
            }
            Err(e) => return Err(fail("creating", key, &e)),
        }
        sync_parent(&path).map_err(|e| fail("creating", key, &e))?;
        Ok(version_of(data))
    }

    fn update(&self, key: &str, data: &[u8], expected: &Version) -> Result<Version, BlobError> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root);
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        std::fs::create_dir_all(dir).map_err(|e| fail("updating", key, &e))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!(".{name}.lock")))
            .map_err(|e| fail("locking", key, &e))?;
        // Released when `lock` is dropped, at the end of this function.
        lock.lock().map_err(|e| fail("locking", key, &e))?;
        match self.get(key)? {
            Some(current) if current.version == *expected => {}
            _ => return Err(BlobError::Conflict { key: key.into() }),
        }
        self.put(key, data)?;
        Ok(version_of(data))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let base = prefix.trim_end_matches('/');
        walk(&self.path(base), base, &mut keys).map_err(|e| fail("listing", prefix, &e))?;
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(fail("deleting", key, &e)),
        }
        // Empty directories left behind (a pruned checkpoint's) go too; best effort.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Collects the keys below `dir` (whose key is `key`); hidden names (temporary and lock
/// files) are not objects.
fn walk(dir: &Path, key: &str, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let child = if key.is_empty() {
            name
        } else {
            format!("{key}/{name}")
        };
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &child, keys)?;
        } else {
            keys.push(child);
        }
    }
    Ok(())
}

fn version_of(data: &[u8]) -> Version {
    Version(format!("{}-{:08x}", data.len(), crc32fast::hash(data)))
}

/// Makes a rename or link in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    // Only Unix can open a directory to fsync it; elsewhere the rename is the best we have.
    if cfg!(unix)
        && let Some(dir) = path.parent()
    {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn fail(op: &'static str, key: &str, e: &std::io::Error) -> BlobError {
    let message = e.to_string();
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        BlobError::Denied {
            op,
            key: key.into(),
            message,
        }
    } else {
        BlobError::Unavailable {
            op,
            key: key.into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_writes_and_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Local::new(&tmp.path().join("root"));
        assert!(s.get("p/head.json").unwrap().is_none());
        assert_eq!(s.list("p").unwrap(), Vec::<String>::new());

        let v1 = s.create("p/head.json", b"one").unwrap();
        assert!(matches!(
            s.create("p/head.json", b"two"),
            Err(BlobError::Conflict { .. })
        ));
        let v2 = s.update("p/head.json", b"two", &v1).unwrap();
        assert!(matches!(
            s.update("p/head.json", b"three", &v1),
            Err(BlobError::Conflict { .. })
        ));
        let got = s.get("p/head.json").unwrap().unwrap();
        assert_eq!((&got.data[..], &got.version), (&b"two"[..], &v2));
        assert!(matches!(
            s.update("p/missing", b"x", &v2),
            Err(BlobError::Conflict { .. })
        ));

        s.put("p/c1/state", &[7; 100]).unwrap();
        s.put("p/c1/state", &[8; 10]).unwrap();
        let mut keys = s.list("p").unwrap();
        keys.sort();
        assert_eq!(keys, ["p/c1/state", "p/head.json"]);
        s.delete("p/c1/state").unwrap();
        s.delete("p/c1/state").unwrap();
        assert!(
            !tmp.path().join("root/p/c1").exists(),
            "empty directory left"
        );
        assert_eq!(s.list("p").unwrap(), ["p/head.json"]);
    }

    #[test]
    fn concurrent_updates_of_one_version_have_one_winner() {
        let tmp = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Local::new(tmp.path()));
        for round in 0..20 {
            let key = format!("race/{round}");
            let v = s.create(&key, b"start").unwrap();
            let wins: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (s, key, v) = (s.clone(), key.clone(), v.clone());
                        scope.spawn(move || {
                            s.update(&key, format!("writer {i}").as_bytes(), &v).is_ok()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().unwrap()))
                    .sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
    }
}
