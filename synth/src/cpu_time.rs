//! Bench support: how long the calling thread has run on a CPU.
//!
//! On a shared machine, wall-clock time counts the time other processes hold the cores; the
//! thread's own CPU time does not, so speed figures from it move far less between runs. For
//! measurements that are printed, never for assertions: tests must not depend on speed.

use std::time::Duration;

/// How long the calling thread has run on a CPU, from Linux's `/proc/thread-self/schedstat` (the
/// kernel keeps it in nanoseconds, updated at every scheduling event, so time spent waiting for a
/// core is not counted); `None` where the kernel does not report it.
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the kernel reports it, it grows while the thread works.
    #[test]
    fn thread_cpu_time_grows_with_work() {
        let Some(before) = thread_cpu_time() else {
            return;
        };
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        let after = thread_cpu_time().expect("reported once, reported again");
        assert!(after > before);
    }
}
