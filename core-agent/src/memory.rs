//! How much memory an app process has to itself: Private_Clean + Private_Dirty from
//! `/proc/<pid>/smaps_rollup` (pages shared with a preloader or other processes don't count),
//! for `passenger_memory_limit`.

/// The private memory of process `pid` in bytes; `None` when it cannot be read (the process is
/// gone, or another user's process the core may not inspect).
pub fn private_bytes(pid: u32) -> Option<u64> {
    parse_private_bytes(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// Private_Clean + Private_Dirty of an smaps_rollup text, in bytes.
pub fn parse_private_bytes(smaps_rollup: &str) -> Option<u64> {
    let mut total = None;
    for line in smaps_rollup.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name == "Private_Clean" || name == "Private_Dirty" {
            let kb: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
            total = Some(total.unwrap_or(0) + kb * 1024);
        }
    }
    total
}

/// Whether `private_bytes` exceeds a limit of `limit_mb` megabytes (0 = no limit).
pub fn over_limit(private_bytes: u64, limit_mb: u64) -> bool {
    limit_mb > 0 && private_bytes > limit_mb.saturating_mul(1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_memory_from_smaps_rollup() {
        let text = "5638662c5000-7ffd98ec6000 ---p 00000000 00:00 0    [rollup]\n\
                    Rss:                1760 kB\n\
                    Shared_Clean:       1600 kB\n\
                    Private_Clean:        44 kB\n\
                    Private_Dirty:       116 kB\n\
                    Private_Hugetlb:       0 kB\n";
        assert_eq!(parse_private_bytes(text), Some(160 * 1024));
        assert_eq!(parse_private_bytes("Rss: 1 kB\n"), None);
        assert!(private_bytes(std::process::id()).unwrap() > 0);
        assert_eq!(private_bytes(u32::MAX), None);
    }

    #[test]
    fn limit_in_megabytes() {
        assert!(!over_limit(u64::MAX, 0), "0 = no limit");
        assert!(!over_limit(100 * 1024 * 1024, 100));
        assert!(over_limit(100 * 1024 * 1024 + 1, 100));
    }
}
