//! File I/O off the async runtime: request handlers hand their disk work (appends,
//! cold reads, fsyncs) to Tokio's blocking pool, so a slow disk stalls the requests
//! that wait for it and not every connection served by the same worker thread.

/// Runs `f` on the blocking pool and waits for it. A panic in `f` is resumed here,
/// as if `f` had run inline; `None` only when the runtime is shutting down.
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_on_another_thread_and_returns_the_result() {
        let here = std::thread::current().id();
        let there = super::run(|| std::thread::current().id()).await;
        assert!(there.is_some_and(|t| t != here));
    }
}
