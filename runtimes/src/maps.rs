//! `/proc/self/maps`, parsed: what the zygote reads to find its own memory.

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapping<'a> {
    pub start: usize,
    pub end: usize,
    pub perms: &'a str,
    pub inode: &'a str,
    /// The file, a kernel name such as `[heap]` or `[stack]`, or empty.
    pub path: &'a str,
}

impl Mapping<'_> {
    /// Readable, writable and private (`rw?p`).
    pub fn private_writable(&self) -> bool {
        self.perms.starts_with("rw") && self.perms.ends_with('p')
    }

    /// Backed by no file: the heap, or a mapping with no name.
    pub fn anonymous(&self) -> bool {
        self.inode == "0" && (self.path.is_empty() || self.path == "[heap]")
    }
}

/// This process's mappings (none if `/proc/self/maps` cannot be read).
pub(crate) fn read() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
}

/// The mappings `maps` lists (lines that do not parse are skipped).
pub(crate) fn parse(maps: &str) -> impl Iterator<Item = Mapping<'_>> {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let inode = fields.nth(2)?;
        let path = fields.next().unwrap_or("");
        let (start, end) = range.split_once('-')?;
        Some(Mapping {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            perms,
            inode,
            path,
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_parse_into_ranges_permissions_inodes_and_paths() {
        let maps = "\
00400000-00401000 r-xp 00000000 08:01 1234 /usr/bin/python3.11
016d8000-01800000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
not a line
";
        let got: Vec<_> = super::parse(maps)
            .map(|m| {
                (
                    m.start,
                    m.end,
                    m.perms,
                    m.inode,
                    m.path,
                    m.private_writable(),
                    m.anonymous(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    0x40_0000,
                    0x40_1000,
                    "r-xp",
                    "1234",
                    "/usr/bin/python3.11",
                    false,
                    false
                ),
                (0x16d_8000, 0x180_0000, "rw-p", "0", "[heap]", true, true),
                (
                    0x7f00_0000_0000,
                    0x7f00_0010_0000,
                    "rw-p",
                    "0",
                    "",
                    true,
                    true
                ),
            ]
        );
    }
}
