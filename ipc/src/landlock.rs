//! The landlock rules an environment restricts itself with, as a zygote receives them.
//!
//! The sandbox decides the rules (`hearth_sandbox::LandlockRules`), and an environment started
//! from nothing applies them in its first process. A zygote cannot be landlocked (landlock
//! forbids the mounts each child makes) and cannot hand its children a ready ruleset either:
//! a rule on `/tmp` names the inode that was at `/tmp` when the rule was added, and landlock
//! does not look at a directory covered by a mount, so the tmpfs a child mounts over `/tmp`
//! would be outside every rule. hearth therefore hands the zygote the rules themselves:
//! `hearth-snapshot` encodes them ([`Rules::encode`]) into a sealed memfd that the zygote finds
//! at fd 6, and each child builds its own ruleset from them once its mounts are in place.
//!
//! Encoding (little-endian): `b"HLR1"`, abi `u32`, handled filesystem rights `u64`, scopes
//! `u64`, rule count `u32`, then per rule its rights `u64`, path length `u32` and the path's
//! bytes (absolute, no NUL). Decoding checks every field; the bytes come from hearth, but a
//! zygote reads them after running function code.

use std::ffi::CString;
use std::io;

/// Rules for paths, as landlock's `path_beneath` rules take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The landlock ABI the rules are written for (decides the ruleset attribute's size).
    pub abi: u32,
    /// Filesystem rights the ruleset handles: everything not granted below is denied.
    pub handled_fs: u64,
    /// Scopes (ABI 6+: abstract unix sockets, signals); 0 for none.
    pub scoped: u64,
    /// Paths (absolute, inside the environment) and the rights granted beneath each.
    pub rules: Vec<(CString, u64)>,
}

const MAGIC: &[u8; 4] = b"HLR1";
/// At most this many rules (hearth makes six).
pub const MAX_RULES: usize = 64;
/// At most this long a path.
pub const MAX_PATH: usize = 4096;

impl Rules {
    /// Size of `struct landlock_ruleset_attr` at this ABI: filesystem rights only (1-3), plus
    /// network rights (4-5), plus scopes (6+).
    pub fn attr_size(&self) -> usize {
        match self.abi {
            0..=3 => 8,
            4..=5 => 16,
            _ => 24,
        }
    }

    /// `struct landlock_ruleset_attr` (network rights: none handled).
    pub fn attr(&self) -> [u64; 3] {
        [self.handled_fs, 0, self.scoped]
    }

    /// The bytes a zygote reads back with [`Rules::decode`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.rules.len() * 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.abi.to_le_bytes());
        out.extend_from_slice(&self.handled_fs.to_le_bytes());
        out.extend_from_slice(&self.scoped.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.rules.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for (path, access) in &self.rules {
            let path = path.as_bytes();
            out.extend_from_slice(&access.to_le_bytes());
            out.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(path);
        }
        out
    }

    /// Reads [`Rules::encode`]'s bytes, refusing anything else: a bad magic or ABI, more than
    /// [`MAX_RULES`] rules, a path that is not absolute or longer than [`MAX_PATH`], a rule
    /// granting rights the ruleset does not handle, or bytes left over.
    pub fn decode(bytes: &[u8]) -> io::Result<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(invalid("not a hearth landlock rule set"));
        }
        let abi = r.u32()?;
        let handled_fs = r.u64()?;
        let scoped = r.u64()?;
        let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if abi == 0 || count > MAX_RULES {
            return Err(invalid("landlock rules: bad ABI or too many rules"));
        }
        let mut rules = Vec::with_capacity(count);
        for _ in 0..count {
            let access = r.u64()?;
            let len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
            if len > MAX_PATH {
                return Err(invalid("landlock rules: path too long"));
            }
            let path = r.take(len)?;
            if path.first() != Some(&b'/') || access & !handled_fs != 0 {
                return Err(invalid(
                    "landlock rules: a path is not absolute or a rule grants unhandled rights",
                ));
            }
            let path = CString::new(path).map_err(|_| invalid("landlock rules: NUL in a path"))?;
            rules.push((path, access));
        }
        if !r.0.is_empty() {
            return Err(invalid("landlock rules: bytes after the last rule"));
        }
        Ok(Self {
            abi,
            handled_fs,
            scoped,
            rules,
        })
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(invalid("landlock rules: truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rules {
        Rules {
            abi: 6,
            handled_fs: 0xffff,
            scoped: 3,
            rules: vec![(c"/".into(), 0x0f), (c"/tmp".into(), 0xffff)],
        }
    }

    #[test]
    fn round_trips() {
        let rules = sample();
        assert_eq!(Rules::decode(&rules.encode()).unwrap(), rules);
        assert_eq!(rules.attr_size(), 24);
        assert_eq!(rules.attr(), [0xffff, 0, 3]);
    }

    #[test]
    fn refuses_anything_else() {
        let good = sample().encode();
        // Every truncation, and one byte too many.
        for len in 0..good.len() {
            assert!(Rules::decode(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Rules::decode(&long).is_err());
        // Unhandled rights, a relative path, NUL in a path, too many rules, ABI 0.
        let mut bad = sample();
        bad.rules[0].1 = 0x1_0000;
        assert!(Rules::decode(&bad.encode()).is_err());
        let mut bad = sample();
        bad.rules[0].0 = c"tmp".into();
        assert!(Rules::decode(&bad.encode()).is_err());
        let mut nul = good.clone();
        let at = nul.len() - 2;
        nul[at] = 0;
        assert!(Rules::decode(&nul).is_err());
        let mut bad = sample();
        bad.rules = vec![(c"/".into(), 1); MAX_RULES + 1];
        assert!(Rules::decode(&bad.encode()).is_err());
        let mut bad = sample();
        bad.abi = 0;
        assert!(Rules::decode(&bad.encode()).is_err());
        let mut magic = good;
        magic[0] = b'X';
        assert!(Rules::decode(&magic).is_err());
    }
}
