//! File I/O off the async runtime: request handlers hand their disk work (appends,
//! cold reads, fsyncs) to a thread that may block, so a slow disk stalls the
//! requests that wait for it and not every connection served by the same worker.
//!
//! On the multi-threaded runtime (the broker's) the work runs in place
//! (`block_in_place`): the calling thread stops being a worker and the runtime hands
//! its other tasks to another thread, so the request itself pays no thread hop —
//! measured with Kafka's ProducerPerformance on a busy 2-core machine, a hop per
//! produce request through the blocking pool halved throughput. On a current-thread
//! runtime (unit and integration tests) it goes to the blocking pool.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f` where it may block and waits for it. A panic in `f` is resumed here, as
/// if `f` had run inline; `None` only when the runtime is shutting down.
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Some(tokio::task::block_in_place(f));
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn on_a_current_thread_runtime_it_runs_on_another_thread() {
        let here = std::thread::current().id();
        let there = super::run(|| std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_multi_threaded_runtime_other_tasks_go_on_while_it_blocks() {
        // One task blocks in `run` until another task, spawned on the same runtime,
        // has run: with only two workers that needs the blocked worker's tasks to
        // move elsewhere.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let blocked = tokio::spawn(async move {
            super::run(move || rx.recv_timeout(std::time::Duration::from_secs(10))).await
        });
        let other = tokio::spawn(async move { tx.send(()) });
        assert!(matches!(other.await, Ok(Ok(()))));
        assert!(matches!(blocked.await, Ok(Some(Ok(())))));
    }
}
