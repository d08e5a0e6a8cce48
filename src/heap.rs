//! The heap of every program built on this crate (`lab`, its tests and benches): mimalloc, not
//! glibc's malloc.
//!
//! `lab report` moves each journal entry from the reader thread that allocates it to the thread
//! that folds and frees it; glibc serialises such frees on the allocating arena's lock, and its
//! allocator with that lock took about a quarter of the report's CPU. On 1 M journal events
//! (`lab report` on the folder `REPORT_1M_DIR=DIR cargo bench --bench report_1m` leaves, 2 cores,
//! 3 runs each): 4.7–5.2 s with glibc, 2.9–3.0 s with mimalloc. The price is peak RSS: a
//! 1 000-device `scripts/bench-trial`'s harness 144–158 MiB against 102–116 MiB, the report
//! 403 MiB against 347 MiB (issue 16; README "Performance"). mimalloc's
//! `MIMALLOC_ARENA_EAGER_COMMIT=0` takes ~45 MiB off the report's peak for ~8 % of its time; it
//! is read before `main`, so it is left to the environment.

#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;
