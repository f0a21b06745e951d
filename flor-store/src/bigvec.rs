//! Vectors for tables of millions of rows.
//!
//! Building a 10M-row table writes several hundred MiB; with 4 KiB pages
//! the kernel's page faults cost about as much as the building itself. On
//! Linux, where transparent huge pages are commonly enabled on request
//! (`madvise`), [`with_capacity`] asks for 2 MiB pages for large
//! vectors: 512 times fewer faults. Elsewhere, or when the kernel declines,
//! it is a plain `Vec::with_capacity`.

/// An empty vector with room for `n` items, its memory advised for huge
/// pages when it is large.
pub(crate) fn with_capacity<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    advise(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    if bytes < 4 * HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + bytes) / HUGE * HUGE;
    if hi > lo {
        // SAFETY: `madvise` with MADV_HUGEPAGE only changes how the kernel
        // backs the pages; the range lies inside the vector's allocation,
        // which stays owned by the vector. A failure is harmless (the
        // advice is not taken) and ignored.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise<T>(_: &Vec<T>) {}

#[cfg(test)]
mod tests {
    #[test]
    fn vectors_hold_what_is_pushed() {
        let mut v: Vec<u64> = super::with_capacity(3 << 20);
        assert!(v.capacity() >= 3 << 20);
        v.extend(0..3 << 20);
        assert_eq!(v[12345], 12345);
    }
}
