//! The signing threads: one OS thread per CPU, all fed from one queue.
//!
//! Why not tokio's blocking pool behind a semaphore (what this replaced):
//! there every signature is a hand-off twice over. The permit's release
//! wakes the next waiter on an async worker, which then wakes an idle
//! blocking thread, and a core can sit idle in between while requests
//! queue. On the 2-core bench machine that was 6% idle CPU at full acquire
//! load, plus the futex and IPI cost of two cross-thread wake-ups per
//! signature. Here a thread that finishes a signature takes the next job
//! from the queue without sleeping, so while work waits no core idles, and
//! the only wake-up left is the answer's to the waiting request.
//!
//! The number of threads is the bound on concurrent signatures, as the
//! semaphore's permits were: RSA-4096 costs about 1.5 ms of CPU, and more
//! threads than cores would only interleave them and make each slower. The
//! queue itself is unbounded; what bounds it is the number of requests in
//! flight, which `http.max_connections` caps.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

use super::SigningError;

/// A unit of signing work; it sends its own answer.
type Job = Box<dyn FnOnce() + Send>;

/// The process-wide signing threads and their queue.
pub(super) struct SignPool {
    jobs: Sender<Job>,
}

impl SignPool {
    /// The pool, started on first use with one thread per CPU.
    pub(super) fn get() -> &'static SignPool {
        static POOL: OnceLock<SignPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Self::start(threads)
        })
    }

    fn start(threads: usize) -> SignPool {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("seatwarden-sign-{i}"))
                .spawn(move || work(&queue))
                .expect("the OS refused to start a signing thread");
        }
        SignPool { jobs }
    }

    /// Runs `f` on a signing thread and waits for its result without
    /// blocking the async worker.
    ///
    /// If the caller stops waiting, the job still runs and its result is
    /// dropped: the thread count bounds the CPU spent either way.
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, SigningError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (answer, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                // The caller may be gone; then nobody wants the result.
                let _ = answer.send(f());
            }))
            .map_err(|_| SigningError::Task("the signing threads are gone".into()))?;
        result
            .await
            .map_err(|_| SigningError::Task("a signing job panicked".into()))
    }
}

/// A signing thread's loop: jobs until the queue closes (it never does
/// while the process runs). A panicking job drops its answer sender, which
/// its caller sees as an error; the thread goes on with the next job.
fn work(queue: &Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a signing job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_off_the_async_worker_and_answers() {
        let pool = SignPool::start(2);
        let caller = std::thread::current().id();
        let (thread, value) = pool
            .run(move || (std::thread::current().id(), 40 + 2))
            .await
            .unwrap();
        assert_ne!(thread, caller);
        assert_eq!(value, 42);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_thread_keeps_working() {
        let pool = SignPool::start(1);
        let failed = pool.run(|| -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(SigningError::Task(_))), "{failed:?}");
        // The one thread survived the panic and takes the next job.
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn no_more_jobs_run_at_once_than_there_are_threads() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = SignPool::start(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..16).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::yield_now();
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for done in futures::future::join_all(jobs).await {
            done.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert!(most.load(Ordering::SeqCst) >= 1);
    }
}
