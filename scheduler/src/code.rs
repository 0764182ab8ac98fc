//! Content-addressed store for function code and layers (Lambda deployment zips:
//! `Code.ZipFile`, and layer archives: `Content.ZipFile`). One zip is stored once, whoever
//! uploaded it; the control plane decides what is still referenced (`retain`).
//!
//! # Layout on disk
//!
//! ```text
//! <root>/zips/<hex>.zip        the uploaded bytes, 0444 (GetFunction's code download)
//! <root>/trees/<hex>/          the extracted tree, mounted read-only at /var/task (a function's
//!                              code) or merged into /opt (a layer)
//! <root>/{zips,trees}/.tmp-*   writes and deletes in flight; removed by `CodeStore::open`
//! ```
//!
//! `<hex>` is the lowercase hex SHA-256 of the zip. A package exists (`get` is `Some`) only
//! while both its zip and its tree are at their final names.
//!
//! # Durability
//!
//! Everything is first written under a `.tmp-` name in the directory of its final name; every
//! file and directory is fsync'd, then renamed into place, then the parent directory is
//! fsync'd. The zip is committed first and the tree last, so the tree's rename is the commit
//! point: after a crash no final name holds a partial tree, and a zip without its tree only
//! makes the next `put_zip` extract again. `retain` goes the other way: it first renames the
//! tree to a `.tmp-` name, then deletes. `open` (call it at startup) removes `.tmp-` leftovers.
//!
//! # Extraction rules (the zip is hostile)
//!
//! Every entry is checked before anything is written; a violation is [`CodeError::InvalidZip`]
//! naming the entry, and the temporary tree is removed on any error.
//! - Names are taken as the zip crate decodes them (UTF-8 flag or Unicode-path field, else
//!   CP437) and must pass `enclosed_name()` and stricter checks: no NUL, not absolute, no empty,
//!   `.` or `..` component, components of at most 255 bytes, and the whole name must fit in
//!   PATH_MAX below the store. A backslash is an ordinary character, as on Linux where Lambda
//!   unzips: `a\b` is one file named so.
//! - No duplicates: a raw name twice in the central directory, or two entries at one path (`a`
//!   and `a/`). No entry below a file or symlink entry, so every parent is a real directory
//!   and nothing is written through a symlink; files are created with `O_EXCL`.
//! - Kinds come from the unix mode (external attributes): directories (name ending in `/`, or
//!   `S_IFDIR`), regular files, symlinks; devices, fifos and sockets are refused.
//! - Modes: files 0555 if any execute bit is set, else 0444, also when the zip has no unix mode
//!   (a `bootstrap` without its execute bit stays 0444: Lambda too requires the bit);
//!   directories 0555, set after all files are written, deepest first.
//! - Symlink targets must be relative, non-empty, under 4096 bytes, and stay inside the tree
//!   resolved lexically from the link's directory; `..` may only lead (`../x/y`, not
//!   `x/../y`): as `..` never follows a name that may be a link, chains stay inside too.
//! - Only stored and deflated entries; no encrypted ones.
//! - Sizes: the declared total is checked first, then the bytes actually decompressed are
//!   counted (a bomb may lie) and extraction stops with [`CodeError::UnzippedTooLarge`] past
//!   the limit. CRC and deflate errors are `InvalidZip`. An empty zip is an empty package.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zip::{CompressionMethod, ZipArchive};

/// Lambda's limits.
#[derive(Debug, Clone, Copy)]
pub struct CodeLimits {
    /// Largest zip accepted (Lambda: 50 MB for a direct upload = 52_428_800 bytes).
    pub max_zip_bytes: u64,
    /// Largest total unzipped size (Lambda: 250 MB = 262_144_000 bytes).
    pub max_unzipped_bytes: u64,
    /// Most entries in one zip (hearth's own guard, default 100_000).
    pub max_entries: usize,
}

impl Default for CodeLimits {
    fn default() -> Self {
        Self {
            max_zip_bytes: 52_428_800,
            max_unzipped_bytes: 262_144_000,
            max_entries: 100_000,
        }
    }
}

/// A stored code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Lowercase hex SHA-256 of the zip: the package's address.
    pub sha256_hex: String,
    /// Base64 SHA-256 of the zip, as Lambda's `CodeSha256` shows it.
    pub sha256_base64: String,
    /// Zip size in bytes (`CodeSize`).
    pub size: u64,
    /// The extracted tree, mounted read-only at /var/task (or merged into /opt for a layer).
    pub dir: PathBuf,
}

/// Why a code package was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The zip is larger than `max_zip_bytes`: `RequestEntityTooLargeException` (413).
    #[error("Zipped size must be smaller than {limit} bytes (got {size} bytes)")]
    TooLarge {
        /// Size of the upload.
        size: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// Unzipped size over the limit: `InvalidParameterValueException` (400).
    #[error("Unzipped size must be smaller than {limit} bytes")]
    UnzippedTooLarge {
        /// The limit it broke.
        limit: u64,
    },
    /// Not a readable zip, or an entry that cannot be extracted safely:
    /// `InvalidZipFileException` (400). The string is the whole message.
    #[error("{0}")]
    InvalidZip(String),
    /// Disk I/O failed: `ServiceException` (500).
    #[error("code store I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CodeError {
    /// Lambda error type name.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "RequestEntityTooLargeException",
            Self::UnzippedTooLarge { .. } => "InvalidParameterValueException",
            Self::InvalidZip(_) => "InvalidZipFileException",
            Self::Io(_) => "ServiceException",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::UnzippedTooLarge { .. } | Self::InvalidZip(_) => 400,
            Self::Io(_) => 500,
        }
    }
}

fn zip_invalid(e: zip::result::ZipError) -> CodeError {
    match e {
        zip::result::ZipError::Io(e) => invalid(format!("Corrupt zip: {e}.")),
        e => invalid(format!("{e}.")),
    }
}

fn invalid(detail: impl std::fmt::Display) -> CodeError {
    CodeError::InvalidZip(format!(
        "Could not unzip uploaded file. Please check your file, then try to upload again. {detail}"
    ))
}

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const MAX_PATH: usize = 4095;
const TMP: &str = ".tmp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File { exec: bool },
    Link,
}

/// The store: `<root>/zips/<hex>.zip` and `<root>/trees/<hex>/`.
#[derive(Debug)]
pub struct CodeStore {
    zips: PathBuf,
    trees: PathBuf,
    seq: AtomicU64,
}

impl CodeStore {
    /// Opens (creating) the store under `root`; removes leftovers of interrupted writes
    /// (temporary names).
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let store = Self {
            zips: root.join("zips"),
            trees: root.join("trees"),
            seq: AtomicU64::new(0),
        };
        for dir in [&store.zips, &store.trees] {
            fs::create_dir_all(dir)?;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(TMP) {
                    remove_tree(&entry.path())?;
                }
            }
            sync_dir(dir)?;
        }
        Ok(store)
    }

    /// Validates and stores a zip; idempotent (the same bytes return the same `StoredCode`
    /// without extracting again). Durable before it returns (see the module docs).
    pub fn put_zip(&self, zip: &[u8], limits: &CodeLimits) -> Result<StoredCode, CodeError> {
        let size = u64::try_from(zip.len()).unwrap_or(u64::MAX);
        if size > limits.max_zip_bytes {
            return Err(CodeError::TooLarge {
                size,
                limit: limits.max_zip_bytes,
            });
        }
        let hex = hex_encode(&Sha256::digest(zip));
        if let Some(stored) = self.get(&hex) {
            return Ok(stored);
        }
        let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(zip_invalid)?;
        let tmp_tree = self.trees.join(self.tmp_name(&hex));
        // Names must fit in PATH_MAX below the temporary tree (the final path is shorter).
        let budget = MAX_PATH.saturating_sub(tmp_tree.as_os_str().len() + 1);
        let plan = plan(&mut archive, zip, limits, budget)?;
        let stored = extract(&mut archive, &plan, &tmp_tree, limits.max_unzipped_bytes)
            .and_then(|()| Ok(self.commit(&hex, zip, &tmp_tree)?));
        if let Err(e) = stored {
            // Best effort: the error that matters is `e`; `open` removes what stays.
            let _ = remove_tree(&tmp_tree);
            return Err(e);
        }
        self.get(&hex)
            .ok_or_else(|| io::Error::other("stored package vanished").into())
    }

    /// Writes the zip, then renames the (already synced) tree into place.
    fn commit(&self, hex: &str, zip: &[u8], tmp_tree: &Path) -> io::Result<()> {
        let tmp_zip = self.zips.join(self.tmp_name(hex));
        let mut file = create_new(&tmp_zip)?;
        let written = file
            .write_all(zip)
            .and_then(|()| file.set_permissions(Permissions::from_mode(0o444)))
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp_zip, self.zips.join(format!("{hex}.zip"))));
        if written.is_err() {
            let _ = fs::remove_file(&tmp_zip);
        }
        written?;
        sync_dir(&self.zips)?;
        let tree = self.trees.join(hex);
        if fs::symlink_metadata(&tree).is_ok() {
            // The zip is in place, so a directory here is a complete tree (an earlier put
            // whose zip was lost, or a concurrent put that won): keep it.
            if self.get(hex).is_some() {
                return remove_tree(tmp_tree);
            }
            self.remove_dir_atomically(hex)?; // not a directory
        }
        fs::rename(tmp_tree, &tree)?;
        sync_dir(&self.trees)
    }

    /// A stored package by hex address (None if absent or incomplete).
    pub fn get(&self, sha256_hex: &str) -> Option<StoredCode> {
        let digest = hex_decode(sha256_hex)?;
        let dir = self.trees.join(sha256_hex);
        let zip = fs::symlink_metadata(self.zips.join(format!("{sha256_hex}.zip"))).ok()?;
        if !zip.is_file() || !fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
        Some(StoredCode {
            sha256_hex: sha256_hex.to_owned(),
            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len(),
            dir,
        })
    }

    /// Where the original zip of a stored package is (None if absent).
    pub fn zip_path(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.get(sha256_hex)?;
        Some(self.zips.join(format!("{sha256_hex}.zip")))
    }

    /// The original zip bytes (for GetFunction's code download).
    #[cfg(test)]
    pub fn zip_bytes(&self, sha256_hex: &str) -> io::Result<Vec<u8>> {
        if hex_decode(sha256_hex).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sha256 hex address",
            ));
        }
        fs::read(self.zips.join(format!("{sha256_hex}.zip")))
    }

    /// Deletes packages whose address is not in `keep` (garbage collection after deletes).
    /// Returns how many were removed. Must not run concurrently with a `put_zip` of a package
    /// outside `keep`.
    pub fn retain(&self, keep: &HashSet<String>) -> io::Result<usize> {
        let mut doomed = HashSet::new();
        for (dir, suffix) in [(&self.trees, ""), (&self.zips, ".zip")] {
            for entry in fs::read_dir(dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some(hex) = name.strip_suffix(suffix) {
                    if hex_decode(hex).is_some() && !keep.contains(hex) {
                        doomed.insert(hex.to_owned());
                    }
                }
            }
        }
        for hex in &doomed {
            self.remove_dir_atomically(hex)?;
            match fs::remove_file(self.zips.join(format!("{hex}.zip"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => sync_dir(&self.zips)?,
            }
        }
        Ok(doomed.len())
    }

    /// Moves `trees/<hex>` to a temporary name (so no final name holds a partial tree), then
    /// deletes it.
    fn remove_dir_atomically(&self, hex: &str) -> io::Result<()> {
        let aside = self.trees.join(self.tmp_name(hex));
        match fs::rename(self.trees.join(hex), &aside) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => sync_dir(&self.trees).and_then(|()| remove_tree(&aside)),
        }
    }

    fn tmp_name(&self, hex: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{TMP}{hex}-{}-{n}", std::process::id())
    }
}

/// What `plan` decided: every directory (explicit or implied, shallowest first) and the
/// files and symlinks (entry index, path, kind).
type Plan = (Vec<PathBuf>, Vec<(usize, PathBuf, Kind)>);

/// Checks every entry before anything is written.
fn plan(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    zip: &[u8],
    limits: &CodeLimits,
    budget: usize,
) -> Result<Plan, CodeError> {
    let max = limits.max_entries;
    if archive.len() > max {
        return Err(invalid(format!("More than {max} entries.")));
    }
    let raw = central_directory_names(zip, archive.central_directory_start(), max)?;
    if raw != archive.len() {
        return Err(invalid("Duplicate entry names."));
    }
    let mut kinds: HashMap<PathBuf, Kind> = HashMap::new();
    let mut items = Vec::new();
    let mut declared = 0u64;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(zip_invalid)?;
        let name = entry.name().to_owned();
        let bad = |why: &str| invalid(format!("Entry {name:?}: {why}."));
        if entry.encrypted() {
            return Err(bad("encrypted entries are not supported"));
        }
        if !matches!(
            entry.compression(),
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(bad("unsupported compression method"));
        }
        let (path, slash) = entry_path(&name, budget).map_err(bad)?;
        if entry.enclosed_name().is_none() {
            return Err(bad("unsafe path"));
        }
        let mode = entry.unix_mode().unwrap_or(0);
        let kind = match (mode & S_IFMT, slash) {
            (0 | S_IFDIR, true) | (S_IFDIR, false) => Kind::Dir,
            (0 | S_IFREG, false) => Kind::File {
                exec: mode & 0o111 != 0,
            },
            (S_IFLNK, false) => Kind::Link,
            _ => return Err(bad("not a regular file, directory or symlink")),
        };
        declared = declared.saturating_add(entry.size());
        if declared > limits.max_unzipped_bytes {
            return Err(CodeError::UnzippedTooLarge {
                limit: limits.max_unzipped_bytes,
            });
        }
        // Parents must be directories; stop at the first one already known (its own
        // parents were checked when it was added).
        for parent in path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
        {
            match kinds.get(parent) {
                Some(Kind::Dir) => break,
                Some(_) => return Err(bad("lies below a file or symlink entry")),
                None => kinds.insert(parent.to_path_buf(), Kind::Dir),
            };
        }
        match kinds.insert(path.clone(), kind) {
            None => {}
            Some(Kind::Dir) if kind == Kind::Dir => {}
            Some(_) => return Err(bad("duplicate path")),
        }
        if kind != Kind::Dir {
            items.push((index, path, kind));
        }
    }
    let mut dirs: Vec<PathBuf> = kinds
        .into_iter()
        .filter(|(_, k)| *k == Kind::Dir)
        .map(|(p, _)| p)
        .collect();
    dirs.sort_by_key(|p| p.components().count());
    Ok((dirs, items))
}

/// Counts central directory headers from `start`, refusing repeated raw names.
fn central_directory_names(zip: &[u8], start: u64, max: usize) -> Result<usize, CodeError> {
    let le16 = |at: usize| {
        zip.get(at..at + 2)
            .map(|b| usize::from(b[0]) | usize::from(b[1]) << 8)
    };
    let mut pos = usize::try_from(start).map_err(invalid)?;
    let mut seen = HashSet::new();
    while zip.get(pos..pos.saturating_add(4)) == Some(b"PK\x01\x02") && seen.len() <= max {
        let (Some(n), Some(m), Some(k)) = (le16(pos + 28), le16(pos + 30), le16(pos + 32)) else {
            break;
        };
        let name = zip
            .get(pos + 46..pos + 46 + n)
            .ok_or_else(|| invalid("Truncated."))?;
        if !seen.insert(name) {
            let name = String::from_utf8_lossy(name);
            return Err(invalid(format!("Entry {name:?}: duplicate entry name.")));
        }
        pos += 46 + n + m + k;
    }
    Ok(seen.len())
}

/// Validates an entry name; returns the relative path and whether it ended in `/`.
fn entry_path(name: &str, budget: usize) -> Result<(PathBuf, bool), &'static str> {
    let (body, slash) = match name.strip_suffix('/') {
        Some(body) => (body, true),
        None => (name, false),
    };
    if name.contains('\0') {
        return Err("NUL in name");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.len() > budget {
        return Err("name too long");
    }
    for comp in body.split('/') {
        match comp {
            "" => return Err("empty path component"),
            "." | ".." => return Err("'.' or '..' path component"),
            c if c.len() > 255 => return Err("path component too long"),
            _ => {}
        }
    }
    Ok((PathBuf::from(body), slash))
}

/// Checks that a symlink at `link` with `target` resolves inside the tree.
fn check_link(link: &Path, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
        return Err("symlink target empty, too long or with NUL");
    }
    if target.starts_with(b"/") {
        return Err("absolute symlink target");
    }
    let mut depth = link.components().count().saturating_sub(1);
    let mut named = false;
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." if named => return Err("'..' after a name in symlink target"),
            b".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("symlink target escapes the package")?
            }
            _ => named = true,
        }
    }
    Ok(())
}

/// Writes the planned entries under `tmp` (created here) and syncs everything.
fn extract(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    plan: &Plan,
    tmp: &Path,
    limit: u64,
) -> Result<(), CodeError> {
    use std::os::unix::ffi::OsStrExt;
    fs::create_dir(tmp)?;
    for dir in &plan.0 {
        fs::create_dir(tmp.join(dir))?;
    }
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for (index, path, kind) in &plan.1 {
        let mut entry = archive.by_index(*index).map_err(zip_invalid)?;
        let bad = |why: &dyn std::fmt::Display| invalid(format!("Entry {path:?}: {why}."));
        let mut out = match kind {
            Kind::File { .. } => Some(create_new(&tmp.join(path))?),
            _ => None,
        };
        let mut target = Vec::new();
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(&e))?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            if total > limit {
                return Err(CodeError::UnzippedTooLarge { limit });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            match out.as_mut() {
                Some(file) => file.write_all(chunk)?,
                None if target.len() + n <= MAX_PATH => target.extend_from_slice(chunk),
                None => return Err(bad(&"symlink target too long")),
            }
        }
        match (kind, out) {
            (Kind::File { exec }, Some(file)) => {
                let mode = if *exec { 0o555 } else { 0o444 };
                file.set_permissions(Permissions::from_mode(mode))?;
                file.sync_all()?;
            }
            _ => {
                check_link(path, &target).map_err(|why| bad(&why))?;
                let target = std::ffi::OsStr::from_bytes(&target);
                std::os::unix::fs::symlink(target, tmp.join(path))?;
            }
        }
    }
    let deepest_first = plan.0.iter().rev().map(|d| tmp.join(d));
    for dir in deepest_first.chain([tmp.to_path_buf()]) {
        fs::set_permissions(&dir, Permissions::from_mode(0o555))?;
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Creates a file that must not exist yet (`O_EXCL`: never follows a symlink).
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file or a (possibly read-only) tree; absent is fine. Never follows symlinks.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if !meta.is_dir() => fs::remove_file(path),
        Ok(_) => {
            let mut stack = vec![path.to_path_buf()];
            while let Some(dir) = stack.pop() {
                fs::set_permissions(&dir, Permissions::from_mode(0o755))?;
                for entry in fs::read_dir(&dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_dir() {
                        stack.push(entry.path());
                    }
                }
            }
            fs::remove_dir_all(path)
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes exactly 64 lowercase hex chars.
fn hex_decode(hex: &str) -> Option<[u8; 32]> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    const LINK: u32 = S_IFLNK | 0o777;

    /// Builds a zip of (name, data, mode, deflate); a name ending in '/' is a directory, mode
    /// `LINK` a symlink whose data is the target.
    fn build(entries: &[(&str, &[u8], u32, bool)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for &(name, data, mode, deflate) in entries {
            let method =
                [CompressionMethod::Stored, CompressionMethod::Deflated][usize::from(deflate)];
            let opts = SimpleFileOptions::default().compression_method(method);
            let opts = opts.unix_permissions(mode);
            if name.ends_with('/') {
                w.add_directory(name, opts).unwrap();
            } else if mode == LINK {
                w.add_symlink(name, std::str::from_utf8(data).unwrap(), opts)
                    .unwrap();
            } else {
                w.start_file(name, opts).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// Overwrites `bytes` at `off` in the first central directory header.
    fn patch_central(zip: &mut [u8], off: usize, bytes: &[u8]) {
        let c = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap() + off;
        zip[c..c + bytes.len()].copy_from_slice(bytes);
    }

    fn store() -> (tempfile::TempDir, CodeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path().join("code")).unwrap();
        (dir, store)
    }

    fn put(store: &CodeStore, zip: &[u8]) -> Result<StoredCode, CodeError> {
        store.put_zip(zip, &CodeLimits::default())
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// (entries in trees/, entries in zips/)
    fn counts(store: &CodeStore) -> (usize, usize) {
        let n = |d: &Path| fs::read_dir(d).unwrap().count();
        (n(&store.trees), n(&store.zips))
    }

    fn assert_invalid(store: &CodeStore, zip: &[u8], what: &str) {
        let e = put(store, zip).map(|_| ()).unwrap_err();
        assert!(matches!(e, CodeError::InvalidZip(_)), "{what}: {e:?}");
        assert_eq!(
            (e.error_type(), e.status()),
            ("InvalidZipFileException", 400)
        );
        assert!(e.to_string().starts_with("Could not unzip uploaded file."));
        assert_eq!(counts(store), (0, 0), "{what}: left files behind");
    }

    #[test]
    fn normal_package_extracts_read_only_with_exec_bits() {
        let (_d, store) = store();
        let zip = build(&[
            ("index.js", b"exports.handler = 1;", 0o644, true),
            ("bootstrap", b"#!/bin/sh\n", 0o755, false),
            ("lib/", b"", 0o755, false),
            ("lib/a.txt", &[7u8; 100_000], 0o600, true),
            ("x/y/z.txt", b"deep", 0o744, true),
            ("x/back\\slash", b"bs", 0o644, false),
            ("lib/link", b"../index.js", LINK, false),
        ]);
        let s = put(&store, &zip).unwrap();
        let digest = Sha256::digest(&zip);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        assert_eq!(
            (&s.sha256_hex, &s.sha256_base64, s.size),
            (&hex, &b64, zip.len() as u64)
        );
        let read = |p: &str| fs::read(s.dir.join(p)).unwrap();
        assert_eq!(read("index.js"), b"exports.handler = 1;");
        assert_eq!(read("lib/a.txt"), vec![7u8; 100_000]);
        assert_eq!(
            (read("x/y/z.txt"), read("x/back\\slash")),
            (b"deep".into(), b"bs".into())
        );
        assert_eq!(read("lib/link"), b"exports.handler = 1;");
        assert_eq!(
            fs::read_link(s.dir.join("lib/link")).unwrap(),
            Path::new("../index.js")
        );
        for (p, m) in [
            ("index.js", 0o444),
            ("bootstrap", 0o555),
            ("lib/a.txt", 0o444),
        ] {
            assert_eq!(mode(&s.dir.join(p)), m, "{p}");
        }
        for p in ["", "lib", "x", "x/y"] {
            assert_eq!(mode(&s.dir.join(p)), 0o555, "dir {p:?}");
        }
        assert_eq!(store.get(&hex), Some(s.clone()));
        assert_eq!(store.zip_bytes(&hex).unwrap(), zip);
        // Idempotent: same answer, same tree (not extracted again); survives a reopen.
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = ino(&s.dir.join("index.js"));
        assert_eq!(put(&store, &zip).unwrap(), s);
        assert_eq!(
            (ino(&s.dir.join("index.js")), counts(&store)),
            (before, (1, 1))
        );
        let reopened = CodeStore::open(store.zips.parent().unwrap()).unwrap();
        assert_eq!(reopened.get(&hex), Some(s));
    }

    #[test]
    fn no_unix_mode_is_read_only_and_empty_zip_is_valid() {
        let (_d, store) = store();
        let mut zip = build(&[("bootstrap", b"x", 0o755, false)]);
        patch_central(&mut zip, 4, &20u16.to_le_bytes()); // made by MS-DOS
        patch_central(&mut zip, 38, &0u32.to_le_bytes()); // no attributes
        assert_eq!(
            mode(&put(&store, &zip).unwrap().dir.join("bootstrap")),
            0o444
        );
        let empty = put(&store, &build(&[])).unwrap();
        assert_eq!(fs::read_dir(&empty.dir).unwrap().count(), 0);
    }

    #[test]
    fn hostile_names_are_rejected_and_nothing_escapes() {
        let (d, store) = store();
        for name in [
            "../evil",
            "/abs",
            "a/../../x",
            "a//b",
            "./a",
            "a/./b",
            "a/..",
        ] {
            assert_invalid(&store, &build(&[(name, b"pwned", 0o644, false)]), name);
        }
        for name in ["a/".repeat(2000), "x".repeat(256)] {
            assert_invalid(&store, &build(&[(&name, b"", 0o644, false)]), "long name");
        }
        assert!(!d.path().join("evil").exists() && !d.path().join("x").exists());
        for (a, m, b) in [("a", 0o644, "a/"), ("a", 0o644, "a/b"), ("l", LINK, "l/b")] {
            let zip = build(&[(a, b"x", m, false), (b, b"", 0o644, false)]);
            assert_invalid(&store, &zip, &format!("{a} + {b}"));
        }
        // The same raw name twice (the writer refuses, so patch "dup2" into "dup1").
        let mut zip = build(&[("dup1", b"1", 0o644, false), ("dup2", b"2", 0o644, false)]);
        while let Some(at) = zip.windows(4).position(|w| w == b"dup2") {
            zip[at + 3] = b'1';
        }
        assert_invalid(&store, &zip, "raw duplicate");
        let mut fifo = build(&[("fifo", b"", 0o644, false)]);
        patch_central(&mut fifo, 38, &(0o010_644u32 << 16).to_le_bytes());
        assert_invalid(&store, &fifo, "fifo");
    }

    #[test]
    fn symlinks_must_stay_inside() {
        let (_d, store) = store();
        for target in [
            "../../etc/passwd",
            "/etc/passwd",
            "../..",
            "a/../../x",
            "a/../b",
            "",
        ] {
            assert_invalid(
                &store,
                &build(&[("d/l", target.as_bytes(), LINK, false)]),
                target,
            );
        }
        let zip = build(&[
            ("a/up", b"..", LINK, false),
            ("a/b/l", b"../../x/./y", LINK, true),
        ]);
        let s = put(&store, &zip).unwrap();
        assert_eq!(fs::read_link(s.dir.join("a/up")).unwrap(), Path::new(".."));
    }

    #[test]
    fn zip_bombs_stop_at_the_limit() {
        let (_d, store) = store();
        let mut limits = CodeLimits {
            max_unzipped_bytes: 1 << 20,
            ..CodeLimits::default()
        };
        let zeros = vec![0u8; 2 << 20];
        let honest = build(&[("ok", b"x", 0o644, false), ("bomb", &zeros, 0o644, true)]);
        let err = store.put_zip(&honest, &limits).unwrap_err();
        assert!(matches!(
            err,
            CodeError::UnzippedTooLarge { limit: 1_048_576 }
        ));
        assert_eq!(
            (err.error_type(), err.status()),
            ("InvalidParameterValueException", 400)
        );
        assert_eq!(
            err.to_string(),
            "Unzipped size must be smaller than 1048576 bytes"
        );
        // A liar declares 100 bytes in both headers; counting catches it during the copy.
        let mut liar = build(&[("bomb", &zeros, 0o644, true)]);
        liar[22..26].copy_from_slice(&100u32.to_le_bytes());
        patch_central(&mut liar, 24, &100u32.to_le_bytes());
        let err = store.put_zip(&liar, &limits).unwrap_err();
        assert!(matches!(err, CodeError::UnzippedTooLarge { .. }), "{err:?}");
        assert_eq!(counts(&store), (0, 0));
        limits.max_entries = 1;
        let err = store.put_zip(&honest, &limits).unwrap_err();
        assert!(matches!(err, CodeError::InvalidZip(_)));
    }

    #[test]
    fn broken_zips_are_invalid_and_big_ones_too_large() {
        let (_d, store) = store();
        let zip = build(&[("a.txt", b"hello hello hello", 0o644, false)]);
        assert_invalid(&store, b"definitely not a zip, just random bytes", "random");
        assert_invalid(&store, &zip[..zip.len() - 10], "truncated");
        let mut crc = zip.clone();
        let at = crc.windows(5).position(|w| w == b"hello").unwrap();
        crc[at] = b'j';
        assert_invalid(&store, &crc, "bad crc");
        let (mut enc, mut bz) = (zip.clone(), zip.clone());
        enc[6] |= 1; // general purpose flag bit 0: encrypted
        patch_central(&mut enc, 8, &[1]); // (bit 3 is clear)
        assert_invalid(&store, &enc, "encrypted");
        bz[8] = 12; // method 12: bzip2
        patch_central(&mut bz, 10, &[12]);
        assert_invalid(&store, &bz, "bzip2");
        let limits = CodeLimits {
            max_zip_bytes: 10,
            ..CodeLimits::default()
        };
        let err = store.put_zip(&zip, &limits).unwrap_err();
        assert!(matches!(err, CodeError::TooLarge { limit: 10, .. }));
        assert_eq!(
            (err.error_type(), err.status()),
            ("RequestEntityTooLargeException", 413)
        );
        let io = CodeError::from(io::Error::other("disk"));
        assert_eq!((io.error_type(), io.status()), ("ServiceException", 500));
    }

    #[test]
    fn retain_get_and_open_cleanup() {
        let (d, store) = store();
        let a = put(&store, &build(&[("a", b"a", 0o644, true)])).unwrap();
        let b = put(&store, &build(&[("b/c", b"b", 0o755, true)])).unwrap();
        let keep = HashSet::from([a.sha256_hex.clone()]);
        assert_eq!(
            (store.retain(&keep).unwrap(), store.retain(&keep).unwrap()),
            (1, 0)
        );
        assert!(store.get(&b.sha256_hex).is_none() && !b.dir.exists());
        assert_eq!(store.get(&a.sha256_hex), Some(a.clone()));
        let upper = a.sha256_hex.to_uppercase();
        for bad in ["../x", &upper, &a.sha256_hex[1..], "", "../zips/x"] {
            assert!(store.get(bad).is_none(), "{bad}");
            let err = store.zip_bytes(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        // A tree without its zip is incomplete, and put_zip repairs it.
        fs::remove_file(store.zips.join(format!("{}.zip", a.sha256_hex))).unwrap();
        assert!(store.get(&a.sha256_hex).is_none());
        assert_eq!(put(&store, &build(&[("a", b"a", 0o644, true)])).unwrap(), a);
        // Leftovers of an interrupted write, read-only like a finished tree.
        let tmp = store.trees.join(".tmp-leftover");
        fs::create_dir_all(tmp.join("sub")).unwrap();
        fs::write(tmp.join("sub/f"), b"x").unwrap();
        for dir in [tmp.join("sub"), tmp] {
            fs::set_permissions(dir, Permissions::from_mode(0o555)).unwrap();
        }
        fs::write(store.zips.join(".tmp-1.zip"), b"x").unwrap();
        let store = CodeStore::open(d.path().join("code")).unwrap();
        assert_eq!(counts(&store), (1, 1));
        assert_eq!(store.get(&a.sha256_hex), Some(a));
    }
}
