//! The heap of every program built on this crate (`lab`, its tests and benches): mimalloc, not
//! glibc's malloc.
//!
//! `lab report` moves each journal entry from the reader thread that allocates it to the thread
//! that folds and frees it; glibc serialises such frees on the allocating arena's lock, and its
//! allocator with that lock took about a quarter of the report's CPU. On 1 M journal events
//! (`lab report` on the folder `REPORT_1M_DIR=DIR cargo bench --bench report_1m` leaves, 2 cores,
//! 3 runs each): 4.7–5.4 s with glibc, 2.7–3.0 s with mimalloc and huge pages off
//! ([`without_huge_pages`]). The price is a little RSS: a 1 000-device `scripts/bench-trial`'s
//! harness 111–121 MiB against 100–113 MiB, the report 351–360 MiB against 342–347 MiB, and
//! about half a millisecond per one-device probe (issue 16; README "Performance"). mimalloc's
//! `MIMALLOC_ARENA_EAGER_COMMIT=0` takes ~45 MiB off the report's peak for ~8 % of its time; it
//! is read before `main`, so it is left to the environment.

#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turn transparent huge pages off for this process (and the processes it starts), on Linux.
///
/// mimalloc spreads each thread's pages over 2 MiB-aligned regions; where the kernel backs
/// anonymous memory with huge pages (`/sys/kernel/mm/transparent_hugepage/enabled` is `always`
/// on many distributions), the first byte touched in a region faults in, and zeroes, 2 MiB. On
/// the 2-core machine of issue 16 that cost `lab report` on 1 M events 0.6–0.9 s and ~55 MiB
/// (3.6–3.7 s → 2.8–3.1 s with them off, 3 runs each). mimalloc's own switch
/// (`MIMALLOC_ALLOW_THP=0`) is read at its first allocation, before `main`, so the process asks
/// the kernel itself, from [`BEFORE_MAIN`]; the setting applies to faults from then on.
/// Best effort: a kernel that refuses leaves the default.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// [`without_huge_pages`] as an ELF constructor: it runs before the Rust runtime's first
/// allocation (in `std::rt`, before `main`), which reserves mimalloc's first region and used to
/// fault in two huge pages — ~40 % of a one-device `lab probe`'s CPU (`perf record`,
/// issue 16, 2026-12-06). Every binary built on the crate (tests and benches too) gets it.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static BEFORE_MAIN: extern "C" fn() = {
    extern "C" fn before_main() {
        without_huge_pages();
    }
    before_main
};

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The constructor ran in this test binary: the kernel reports huge pages off for it.
    #[test]
    fn huge_pages_are_off_before_main() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
            return; // a kernel older than 5.0 does not say
        };
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
}
