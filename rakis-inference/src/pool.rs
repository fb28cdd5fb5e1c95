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
pub(crate) fn for_each<T: Send>(parallel: bool, tasks: &mut [T], f: impl Fn(&mut T) + Sync) {
    if !parallel || tasks.len() < 2 {
        tasks.iter_mut().for_each(f);
        return;
    }
    let tasks: Vec<Mutex<&mut T>> = tasks.iter_mut().map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
        for t in range {
            // Each task is taken by one thread only: never contended.
            let mut task = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
            f(&mut task);
        }
    });
}
