//! Spreading a product's tasks over candle's thread pool.

use std::sync::{Mutex, OnceLock};

/// Threads of candle's pool, counted once (candle counts them by reading `/proc/cpuinfo`, which
/// would cost more than a decoding step's product).
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// Runs `f` on every task, on candle's pool when `parallel` (the calling thread works too; the
/// pool's threads take the tasks in turn, so one slow thread does not hold the others), else in
/// order on the calling thread.
///
/// A task that panics does not take the pool with it: the panic is caught in the task and
/// raised again on the calling thread once the pool is done (candle's pool, re-raising it
/// itself, would poison the lock every later product takes). `f` must not call `for_each`
/// (the pool's lock is held while the tasks run).
pub(crate) fn for_each<T: Send>(parallel: bool, tasks: &mut [T], f: impl Fn(&mut T) + Sync) {
    if !parallel || tasks.len() < 2 {
        tasks.iter_mut().for_each(f);
        return;
    }
    let tasks: Vec<Mutex<&mut T>> = tasks.iter_mut().map(Mutex::new).collect();
    let panicked: Mutex<Option<Box<dyn std::any::Any + Send>>> = Mutex::new(None);
    candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
        for t in range {
            // Each task is taken by one thread only: never contended.
            let mut task = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut task)));
            if let Err(payload) = run {
                panicked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(payload);
            }
        }
    });
    if let Some(payload) = panicked.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    /// A task's panic reaches the caller, and the pool still runs the next products.
    #[test]
    fn a_panicking_task_leaves_the_pool_usable() {
        if super::threads() < 2 {
            return;
        }
        let mut tasks: Vec<usize> = (0..64).collect();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::for_each(true, &mut tasks, |t| {
                assert!(*t != 17, "task 17 fails");
                *t *= 2;
            })
        }));
        assert!(caught.is_err());
        let mut tasks: Vec<usize> = (0..64).collect();
        super::for_each(true, &mut tasks, |t| *t *= 2);
        assert_eq!(tasks, (0..64).map(|t| t * 2).collect::<Vec<_>>());
    }
}
