//! The shell's way of running a plan's independent parts: a scoped thread
//! per part, as many parts as the machine has cores.

use crate::plan::Workers;

/// Scoped threads, one per job, joined before [`Workers::run`] returns.
pub(crate) struct Threads;

impl Workers for Threads {
    fn run<'s>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 's>>) {
        if jobs.len() <= 1 {
            jobs.into_iter().for_each(|job| job());
            return;
        }
        // A scope joins every thread at its end and re-raises a panic.
        std::thread::scope(|scope| {
            for job in jobs {
                scope.spawn(job);
            }
        });
    }

    fn width(&self) -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}
