//! The encrypted-blob store: files that browsers encrypted before upload,
//! kept on disk as opaque bytes with their room, uploader, size and times.
//!
//! Blocking file I/O: callers on the async runtime run these methods in
//! `spawn_blocking` (they touch the disk) except where noted. Time is always
//! passed in (`now`, seconds since the Unix epoch) so expiry is testable.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use platform::drop_behind::DropBehind;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A blob's capability: 128 random bits as 32 lowercase hex digits. Whoever
/// knows it may download the (encrypted) blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(String);

impl BlobId {
    fn random() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses an id from a URL; anything but 32 lowercase hex digits is refused.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Limits of the store (`[files]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Seconds a blob lives after its creation.
    pub ttl_s: u64,
    /// Largest blob (bytes of ciphertext).
    pub max_file_bytes: u64,
    /// Bytes one identity may hold at once (declared sizes of its live blobs).
    pub user_quota_bytes: u64,
    /// Bytes all blobs may hold at once.
    pub total_quota_bytes: u64,
    /// A reader of an unfinished blob gives up when its upload has received
    /// nothing for this long.
    pub stall: Duration,
}

/// What the server knows of a blob: no name, no type, no key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobMeta {
    /// The room whose token created it.
    pub room: String,
    /// The identity that created it (quota, upload and delete rights).
    pub owner: String,
    /// Declared size in bytes.
    pub length: u64,
    /// Creation, seconds since the Unix epoch.
    pub created: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

/// Upload state of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes committed so far (the offset the next upload request starts at).
    pub offset: u64,
    /// Declared size.
    pub length: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

/// Why a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unknown, expired or deleted.
    #[error("no such file (unknown, expired or deleted)")]
    NotFound,
    /// Larger than `max_file_bytes`.
    #[error("file too large: {length} bytes, the limit is {max} bytes")]
    TooLarge {
        /// Declared size.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// The identity's quota would be exceeded.
    #[error("quota exceeded: {owner} stores {used} bytes, {length} more would pass the {quota}-byte limit per user")]
    UserQuota {
        /// The identity.
        owner: String,
        /// Bytes it holds.
        used: u64,
        /// Bytes asked for.
        length: u64,
        /// The limit.
        quota: u64,
    },
    /// The server's total quota would be exceeded.
    #[error("quota exceeded: the server's file storage is full ({used} of {quota} bytes in use)")]
    TotalQuota {
        /// Bytes stored.
        used: u64,
        /// The limit.
        quota: u64,
    },
    /// Not the uploader (or, for delete, not the room's operator either).
    #[error("this file belongs to someone else")]
    Forbidden,
    /// An upload must continue exactly at the committed offset.
    #[error("upload offset {given} does not match the committed offset {committed}")]
    Offset {
        /// The offset the client sent.
        given: u64,
        /// The offset the server holds.
        committed: u64,
    },
    /// Another upload request for this blob is still running.
    #[error("another upload to this file is in progress")]
    Busy,
    /// More bytes than declared.
    #[error("more bytes than the declared length {length}")]
    Overflow {
        /// Declared size.
        length: u64,
    },
    /// Unfinished, and its upload received nothing for the stall bound:
    /// its sender stopped (it may still resume).
    #[error(
        "upload stalled: nothing received for {idle_s} s, {offset} of {length} bytes uploaded"
    )]
    Stalled {
        /// Committed bytes.
        offset: u64,
        /// Declared size.
        length: u64,
        /// Seconds since the upload last received bytes.
        idle_s: u64,
    },
    /// Disk trouble.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

struct Entry {
    meta: BlobMeta,
    offset: u64,
    writing: bool,
    /// The committed offset for readers of an unfinished blob; dropped with
    /// the entry, which tells them the blob is gone.
    committed: watch::Sender<u64>,
    /// When the upload last received bytes (or the blob was created or loaded).
    active: Instant,
}

impl Entry {
    fn new(meta: BlobMeta, offset: u64, writing: bool) -> Self {
        Self {
            meta,
            offset,
            writing,
            committed: watch::Sender::new(offset),
            active: Instant::now(),
        }
    }
}

/// A blob opened for reading. Bytes up to `*committed.borrow()` are on disk;
/// while that is below `length`, the upload is still running and the
/// receiver tells when more arrive (or, closed, that the blob is gone).
#[derive(Debug)]
pub struct Reader {
    /// The blob's file.
    pub file: File,
    /// Declared size.
    pub length: u64,
    /// The committed offset.
    pub committed: watch::Receiver<u64>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<BlobId, Entry>,
    total: u64,
    by_owner: HashMap<String, u64>,
}

impl Inner {
    fn remove(&mut self, id: &BlobId) -> Option<Entry> {
        let e = self.blobs.remove(id)?;
        self.total = self.total.saturating_sub(e.meta.length);
        if let Some(used) = self.by_owner.get_mut(&e.meta.owner) {
            *used = used.saturating_sub(e.meta.length);
            if *used == 0 {
                self.by_owner.remove(&e.meta.owner);
            }
        }
        Some(e)
    }
}

/// Blobs in one directory: `{id}.blob` (the bytes) and `{id}.json` (its
/// [`BlobMeta`]). The committed offset of a blob is the length of its file,
/// so a restarted server resumes uploads where they stood.
pub struct BlobStore {
    dir: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("dir", &self.dir).finish()
    }
}

impl BlobStore {
    /// Opens (creating) `dir`, loads the blobs found there and deletes the
    /// expired ones and any file without a valid description.
    pub fn open(dir: &Path, limits: Limits, now: u64) -> io::Result<Arc<Self>> {
        fs::create_dir_all(dir)?;
        let store = Self {
            dir: dir.to_path_buf(),
            limits,
            inner: Mutex::new(Inner::default()),
        };
        let mut inner = Inner::default();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            let Some(id) = BlobId::parse(stem) else {
                continue;
            };
            let meta = match ext {
                "json" => fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<BlobMeta>(&b).ok()),
                "blob" if !store.meta_path(&id).exists() => None,
                _ => continue,
            };
            let offset = fs::metadata(store.blob_path(&id)).map(|m| m.len()).ok();
            match (meta, offset) {
                (Some(meta), Some(offset)) if meta.expires > now && offset <= meta.length => {
                    inner.total += meta.length;
                    *inner.by_owner.entry(meta.owner.clone()).or_default() += meta.length;
                    inner.blobs.insert(id, Entry::new(meta, offset, false));
                }
                _ => store.remove_files(&id),
            }
        }
        *store.lock() = inner;
        Ok(Arc::new(store))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way later calls could not handle: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.blob", id.0))
    }

    fn meta_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.json", id.0))
    }

    fn remove_files(&self, id: &BlobId) {
        // Either may already be gone; nothing else to do about it.
        let _ = fs::remove_file(self.blob_path(id));
        let _ = fs::remove_file(self.meta_path(id));
    }

    /// The store's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reserves `length` bytes for `owner` in `room` and creates an empty blob.
    pub fn create(
        &self,
        room: &str,
        owner: &str,
        length: u64,
        now: u64,
    ) -> Result<(BlobId, BlobMeta), StoreError> {
        let l = &self.limits;
        if length > l.max_file_bytes {
            return Err(StoreError::TooLarge {
                length,
                max: l.max_file_bytes,
            });
        }
        let meta = BlobMeta {
            room: room.to_string(),
            owner: owner.to_string(),
            length,
            created: now,
            expires: now.saturating_add(l.ttl_s),
        };
        let id = BlobId::random();
        {
            let mut inner = self.lock();
            let used = inner.by_owner.get(owner).copied().unwrap_or(0);
            if used.saturating_add(length) > l.user_quota_bytes {
                return Err(StoreError::UserQuota {
                    owner: owner.to_string(),
                    used,
                    length,
                    quota: l.user_quota_bytes,
                });
            }
            if inner.total.saturating_add(length) > l.total_quota_bytes {
                return Err(StoreError::TotalQuota {
                    used: inner.total,
                    quota: l.total_quota_bytes,
                });
            }
            inner.total += length;
            *inner.by_owner.entry(owner.to_string()).or_default() += length;
            // Reserved as "writing" until its files exist.
            inner
                .blobs
                .insert(id.clone(), Entry::new(meta.clone(), 0, true));
        }
        let made = File::create(self.blob_path(&id)).and_then(|_| {
            let json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
            fs::write(self.meta_path(&id), json)
        });
        let mut inner = self.lock();
        match made {
            Ok(()) => {
                if let Some(e) = inner.blobs.get_mut(&id) {
                    e.writing = false;
                }
                Ok((id, meta))
            }
            Err(e) => {
                inner.remove(&id);
                drop(inner);
                self.remove_files(&id);
                Err(e.into())
            }
        }
    }

    fn live<'a>(inner: &'a mut Inner, id: &BlobId, now: u64) -> Result<&'a mut Entry, StoreError> {
        match inner.blobs.get_mut(id) {
            Some(e) if e.meta.expires > now => Ok(e),
            _ => Err(StoreError::NotFound),
        }
    }

    /// Offset, length and expiry of a live blob.
    pub fn progress(&self, id: &BlobId, now: u64) -> Result<Progress, StoreError> {
        let mut inner = self.lock();
        let e = Self::live(&mut inner, id, now)?;
        Ok(Progress {
            offset: e.offset,
            length: e.meta.length,
            expires: e.meta.expires,
        })
    }

    /// The description of a live blob.
    pub fn meta(&self, id: &BlobId, now: u64) -> Result<BlobMeta, StoreError> {
        let mut inner = self.lock();
        Ok(Self::live(&mut inner, id, now)?.meta.clone())
    }

    /// Starts an upload request at `offset` by `owner`: only one at a time
    /// per blob, and only at the committed offset. Does no I/O besides
    /// opening the file.
    pub fn begin_upload(
        self: &Arc<Self>,
        id: &BlobId,
        owner: &str,
        room: &str,
        offset: u64,
        now: u64,
    ) -> Result<Upload, StoreError> {
        let length = {
            let mut inner = self.lock();
            let e = Self::live(&mut inner, id, now)?;
            if e.meta.owner != owner || e.meta.room != room {
                return Err(StoreError::Forbidden);
            }
            if e.writing {
                return Err(StoreError::Busy);
            }
            if offset != e.offset {
                return Err(StoreError::Offset {
                    given: offset,
                    committed: e.offset,
                });
            }
            e.writing = true;
            e.active = Instant::now();
            e.meta.length
        };
        // Made before opening the file: if that fails, its drop ends the request.
        let mut upload = Upload {
            store: self.clone(),
            id: id.clone(),
            file: None,
            offset,
            length,
            drop_behind: DropBehind::at(offset),
        };
        upload.file = Some(OpenOptions::new().write(true).open(self.blob_path(id))?);
        Ok(upload)
    }

    /// Opens a blob for reading, also while its upload runs; refuses an
    /// unfinished blob whose upload received nothing for the stall bound.
    pub fn open_read(&self, id: &BlobId, now: u64) -> Result<Reader, StoreError> {
        let (length, committed) = {
            let mut inner = self.lock();
            let stall = self.limits.stall;
            let e = Self::live(&mut inner, id, now)?;
            let idle = e.active.elapsed();
            if e.offset < e.meta.length && idle >= stall {
                return Err(StoreError::Stalled {
                    offset: e.offset,
                    length: e.meta.length,
                    idle_s: idle.as_secs(),
                });
            }
            (e.meta.length, e.committed.subscribe())
        };
        let file = File::open(self.blob_path(id)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound,
            _ => e.into(),
        })?;
        Ok(Reader {
            file,
            length,
            committed,
        })
    }

    /// How long the upload of a live, unfinished blob has received nothing
    /// (None when the blob is complete, gone or expired). Does no I/O.
    pub fn idle(&self, id: &BlobId, now: u64) -> Option<Duration> {
        let mut inner = self.lock();
        let e = Self::live(&mut inner, id, now).ok()?;
        (e.offset < e.meta.length).then(|| e.active.elapsed())
    }

    /// Deletes a blob if `allowed` says so for its description.
    pub fn delete(
        &self,
        id: &BlobId,
        now: u64,
        allowed: impl FnOnce(&BlobMeta) -> bool,
    ) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            let e = Self::live(&mut inner, id, now)?;
            if !allowed(&e.meta) {
                return Err(StoreError::Forbidden);
            }
            inner.remove(id);
        }
        self.remove_files(id);
        Ok(())
    }

    /// Deletes every blob of `room`; returns how many.
    pub fn delete_room(&self, room: &str) -> usize {
        let ids: Vec<BlobId> = {
            let mut inner = self.lock();
            let ids: Vec<BlobId> = inner
                .blobs
                .iter()
                .filter(|(_, e)| e.meta.room == room)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                inner.remove(id);
            }
            ids
        };
        for id in &ids {
            self.remove_files(id);
        }
        ids.len()
    }

    /// Deletes every blob expired at `now`; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let ids: Vec<BlobId> = {
            let mut inner = self.lock();
            let ids: Vec<BlobId> = inner
                .blobs
                .iter()
                .filter(|(_, e)| e.meta.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                inner.remove(id);
            }
            ids
        };
        for id in &ids {
            self.remove_files(id);
        }
        ids.len()
    }

    /// Number of blobs and bytes reserved by them.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.blobs.len(), inner.total)
    }

    fn commit(&self, id: &BlobId, offset: u64) {
        if let Some(e) = self.lock().blobs.get_mut(id) {
            e.offset = offset;
            e.active = Instant::now();
            e.committed.send_replace(offset);
        }
    }

    fn touch(&self, id: &BlobId) {
        if let Some(e) = self.lock().blobs.get_mut(id) {
            e.active = Instant::now();
        }
    }

    fn finish_upload(&self, id: &BlobId) {
        if let Some(e) = self.lock().blobs.get_mut(id) {
            e.writing = false;
        }
    }
}

/// One running upload request: appends at the committed offset and commits
/// what was written. Dropping it ends the request (the next may start).
pub struct Upload {
    store: Arc<BlobStore>,
    id: BlobId,
    file: Option<File>,
    offset: u64,
    length: u64,
    /// Written pages leave the page cache once on disk (see [`DropBehind`]).
    drop_behind: DropBehind,
}

impl Upload {
    /// The committed offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.length - self.offset
    }

    /// Notes that the request received bytes (not yet written): readers
    /// waiting for them do not count the upload as stalled. Does no I/O.
    pub fn touch(&self) {
        self.store.touch(&self.id);
    }

    /// Writes `parts` back to back at the offset (blocking) and commits
    /// them. Refuses (writing nothing) more than the declared length.
    pub fn write<B: AsRef<[u8]>>(&mut self, parts: &[B]) -> Result<(), StoreError> {
        let n: u64 = parts.iter().map(|p| p.as_ref().len() as u64).sum();
        if n > self.remaining() {
            return Err(StoreError::Overflow {
                length: self.length,
            });
        }
        let file = self.file.as_ref().ok_or(StoreError::NotFound)?;
        let mut at = self.offset;
        for p in parts {
            file.write_all_at(p.as_ref(), at)?;
            at += p.as_ref().len() as u64;
        }
        self.drop_behind.advance(file, at);
        self.offset = at;
        self.store.commit(&self.id, self.offset);
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.store.finish_upload(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            ttl_s: 100,
            max_file_bytes: 1000,
            user_quota_bytes: 1500,
            total_quota_bytes: 2500,
            stall: Duration::from_secs(60),
        }
    }

    fn store(dir: &Path) -> Arc<BlobStore> {
        BlobStore::open(dir, limits(), 1_000).unwrap()
    }

    #[test]
    fn upload_resume_download_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (id, meta) = s.create("r", "alice", 10, 1_000).unwrap();
        assert_eq!(meta.expires, 1_100);
        // Readable while uploading: readers follow the committed offset.
        let mut early = s.open_read(&id, 1_000).unwrap();
        assert_eq!(
            (early.length, *early.committed.borrow_and_update()),
            (10, 0)
        );
        {
            let mut up = s.begin_upload(&id, "alice", "r", 0, 1_000).unwrap();
            // One request at a time.
            assert!(matches!(
                s.begin_upload(&id, "alice", "r", 0, 1_000),
                Err(StoreError::Busy)
            ));
            up.write(&[&b"hel"[..], b"lo"]).unwrap();
        }
        assert!(early.committed.has_changed().unwrap());
        assert_eq!(*early.committed.borrow_and_update(), 5);
        assert_eq!(s.progress(&id, 1_000).unwrap().offset, 5);
        assert!(matches!(
            s.begin_upload(&id, "alice", "r", 0, 1_000),
            Err(StoreError::Offset {
                given: 0,
                committed: 5
            })
        ));
        assert!(matches!(
            s.begin_upload(&id, "bob", "r", 5, 1_000),
            Err(StoreError::Forbidden)
        ));
        let mut up = s.begin_upload(&id, "alice", "r", 5, 1_000).unwrap();
        assert!(matches!(
            up.write(&[b"world, too long"]),
            Err(StoreError::Overflow { length: 10 })
        ));
        up.write(&[b"world"]).unwrap();
        drop(up);
        let r = s.open_read(&id, 1_099).unwrap();
        assert_eq!(*r.committed.borrow(), 10);
        let mut buf = vec![0; r.length as usize];
        r.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, b"helloworld");
        // Reloaded from disk: same state.
        drop(s);
        let s = store(dir.path());
        assert_eq!(s.progress(&id, 1_050).unwrap().offset, 10);
        // Expired: gone for readers at once, and from disk after a sweep.
        assert!(matches!(s.open_read(&id, 1_100), Err(StoreError::NotFound)));
        assert_eq!(s.sweep(1_100), 1);
        // The early reader learns that the blob is gone.
        assert!(early.committed.has_changed().is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn a_stalled_upload_is_refused_to_new_readers() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = limits();
        l.stall = Duration::ZERO;
        let s = BlobStore::open(dir.path(), l, 1_000).unwrap();
        let (id, _) = s.create("r", "alice", 10, 1_000).unwrap();
        s.begin_upload(&id, "alice", "r", 0, 1_000)
            .unwrap()
            .write(&[b"abc"])
            .unwrap();
        let err = s.open_read(&id, 1_000).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Stalled {
                    offset: 3,
                    length: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upload stalled"), "{err}");
        assert!(s.idle(&id, 1_000).is_some());
        // Complete blobs are never stalled.
        s.begin_upload(&id, "alice", "r", 3, 1_000)
            .unwrap()
            .write(&[b"defghij"])
            .unwrap();
        assert!(s.open_read(&id, 1_000).is_ok());
        assert_eq!(s.idle(&id, 1_000), None);
    }

    #[test]
    fn quotas_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(matches!(
            s.create("r", "a", 1001, 0),
            Err(StoreError::TooLarge { .. })
        ));
        let (first, _) = s.create("r", "a", 1000, 0).unwrap();
        let err = s.create("r", "a", 600, 0).unwrap_err();
        assert!(matches!(err, StoreError::UserQuota { used: 1000, .. }));
        assert!(err.to_string().contains("quota"), "{err}");
        s.create("r", "b", 1000, 0).unwrap();
        assert!(matches!(
            s.create("r", "c", 600, 0),
            Err(StoreError::TotalQuota { used: 2000, .. })
        ));
        // Deleting frees the quota; only the allowed may delete.
        assert!(matches!(
            s.delete(&first, 0, |m| m.owner == "b"),
            Err(StoreError::Forbidden)
        ));
        s.delete(&first, 0, |m| m.owner == "a").unwrap();
        s.create("r", "a", 600, 0).unwrap();
        assert_eq!(s.delete_room("r"), 2);
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn ids_are_strict_and_stray_files_are_removed() {
        assert!(BlobId::parse("../etc/passwd").is_none());
        assert!(BlobId::parse(&"A".repeat(32)).is_none());
        assert!(BlobId::parse(&"a".repeat(33)).is_none());
        assert!(BlobId::parse(&"a".repeat(32)).is_some());
        let dir = tempfile::tempdir().unwrap();
        let orphan = dir.path().join(format!("{}.blob", "b".repeat(32)));
        fs::write(&orphan, b"x").unwrap();
        let other = dir.path().join("README");
        fs::write(&other, b"kept").unwrap();
        let s = store(dir.path());
        assert!(!orphan.exists());
        assert!(other.exists());
        assert_eq!(s.usage(), (0, 0));
    }
}
