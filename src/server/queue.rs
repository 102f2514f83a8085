//! The job queue: generations (and model loads) run one at a time, each on a blocking thread
//! (`tokio::task::spawn_blocking`), never on the async runtime.
//!
//! A request is first *admitted*: `capacity` jobs may wait while one runs, and one more is
//! refused with 503 and a `Retry-After` estimate. Admitted jobs take the single run slot in
//! arrival order (a fair `tokio::sync::Mutex`). The slot and the admission are held by the
//! blocking task itself, so a client that disconnects mid-job cancels it (the token) but the next
//! job still starts only once the blocking work has returned. A client that disconnects while
//! waiting simply leaves the queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::{CancellationToken, Progress};

/// The running job, as `/sdapi/v1/progress` reports it.
#[derive(Debug, Clone)]
pub struct JobState {
    /// Sequence number.
    pub id: u64,
    /// `txt2img`, `img2img`, `load checkpoint`.
    pub kind: &'static str,
    /// When it started, A1111's `job_timestamp` format (`YYYYmmddHHMMSS`, UTC).
    pub timestamp: String,
    /// When it started.
    pub started: Instant,
    /// Sub-jobs (A1111's `n_iter` batches).
    pub job_count: usize,
    /// The sub-job running now (0-based).
    pub job_no: usize,
    /// Model evaluations done in this sub-job.
    pub step: usize,
    /// Model evaluations planned in this sub-job.
    pub total: usize,
    /// The backend's estimate for the rest of this sub-job.
    pub eta: Duration,
    /// `/interrupt` was called.
    pub interrupted: bool,
    token: CancellationToken,
}

/// Why a job did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// Every waiting slot is taken; try again after this many seconds.
    Full {
        /// Jobs admitted now (running and waiting).
        queued: usize,
        /// Estimated seconds until a slot frees.
        retry_after: u64,
    },
    /// The server is shutting down.
    ShuttingDown,
    /// The job panicked (a bug); the message.
    Panicked(String),
}

/// An admitted request's place; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Inner {
    current: Option<JobState>,
    shutting_down: bool,
}

/// What a running job uses to report progress and see cancellation.
pub struct JobHandle {
    id: u64,
    token: CancellationToken,
    inner: Arc<Mutex<Inner>>,
}

impl JobHandle {
    /// The job's cancellation token (`/interrupt`, shutdown, client gone).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Records the backend's progress within sub-job `job_no`.
    pub fn progress(&self, job_no: usize, progress: Progress) {
        let mut inner = lock(&self.inner);
        if let Some(job) = inner.current.as_mut().filter(|job| job.id == self.id) {
            job.job_no = job_no;
            job.step = progress.step;
            job.total = progress.total;
            job.eta = progress.eta;
        }
    }
}

/// The bounded queue and the single run slot.
#[derive(Debug)]
pub struct JobQueue {
    capacity: usize,
    admitted: Arc<AtomicUsize>,
    slot: Arc<tokio::sync::Mutex<()>>,
    inner: Arc<Mutex<Inner>>,
    next_id: AtomicU64,
    last_job_ms: Arc<AtomicU64>,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobQueue {
    /// A queue where `capacity` jobs may wait while one runs.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            admitted: Arc::default(),
            slot: Arc::default(),
            inner: Arc::default(),
            next_id: AtomicU64::new(1),
            last_job_ms: Arc::new(AtomicU64::new(1000)),
        }
    }

    /// Takes a place in the queue, or says when to come back.
    pub fn admit(&self) -> Result<Ticket, QueueError> {
        if lock(&self.inner).shutting_down {
            return Err(QueueError::ShuttingDown);
        }
        let limit = self.capacity + 1;
        let taken = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Ticket(self.admitted.clone())),
            Err(admitted) => {
                let per_job = self.last_job_ms.load(Ordering::Relaxed);
                let wait_ms = per_job.saturating_mul(admitted as u64);
                Err(QueueError::Full {
                    queued: admitted,
                    retry_after: wait_ms.div_ceil(1000).max(1),
                })
            }
        }
    }

    /// Jobs admitted and not finished (running or waiting).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// The running job, if any.
    pub fn current(&self) -> Option<JobState> {
        lock(&self.inner).current.clone()
    }

    /// Cancels the running job (it stops within one model evaluation); false when none runs.
    pub fn interrupt(&self) -> bool {
        let mut inner = lock(&self.inner);
        match inner.current.as_mut() {
            Some(job) => {
                job.interrupted = true;
                job.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Refuses new and waiting jobs and cancels the running one.
    pub fn shut_down(&self) {
        let mut inner = lock(&self.inner);
        inner.shutting_down = true;
        if let Some(job) = inner.current.as_mut() {
            job.interrupted = true;
            job.token.cancel();
        }
    }

    /// Waits for the run slot, then runs `work` on a blocking thread. `ticket` is the admission
    /// (model loads have none: they wait but are never refused for a full queue).
    pub async fn run<T, F>(
        &self,
        ticket: Option<Ticket>,
        kind: &'static str,
        job_count: usize,
        work: F,
    ) -> Result<T, QueueError>
    where
        F: FnOnce(&JobHandle) -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.slot.clone().lock_owned().await;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let token = CancellationToken::new();
        let started = Instant::now();
        {
            let mut inner = lock(&self.inner);
            if inner.shutting_down {
                return Err(QueueError::ShuttingDown);
            }
            inner.current = Some(JobState {
                id,
                kind,
                timestamp: timestamp(SystemTime::now()),
                started,
                job_count,
                job_no: 0,
                step: 0,
                total: 0,
                eta: Duration::ZERO,
                interrupted: false,
                token: token.clone(),
            });
        }
        let handle = JobHandle {
            id,
            token: token.clone(),
            inner: self.inner.clone(),
        };
        let finished = Finished {
            id,
            started,
            inner: self.inner.clone(),
            last_job_ms: ticket.as_ref().map(|_| self.last_job_ms.clone()),
        };
        // Cancels the job if this future is dropped (the client went away) before it ends.
        let mut cancel_on_drop = CancelOnDrop(Some(token));
        let task = tokio::task::spawn_blocking(move || {
            // Dropped in reverse order: the job is cleared, the admission freed, then the slot.
            let _slot = slot;
            let _ticket = ticket;
            let _finished = finished;
            work(&handle)
        });
        let result = task.await;
        cancel_on_drop.0 = None;
        result.map_err(|error| QueueError::Panicked(error.to_string()))
    }
}

/// Clears the running job and records its duration (the `Retry-After` estimate).
struct Finished {
    id: u64,
    started: Instant,
    inner: Arc<Mutex<Inner>>,
    last_job_ms: Option<Arc<AtomicU64>>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        if inner.current.as_ref().is_some_and(|job| job.id == self.id) {
            inner.current = None;
        }
        if let Some(last) = &self.last_job_ms {
            last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

struct CancelOnDrop(Option<CancellationToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            token.cancel();
        }
    }
}

/// `YYYYmmddHHMMSS` in UTC (A1111 writes local time; a server has no meaningful local zone).
pub fn timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_a1111_shaped() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(timestamp(leap), "20000229010101");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_frees_places() {
        let queue = JobQueue::new(1);
        let first = queue.admit().unwrap();
        let second = queue.admit().unwrap();
        assert!(matches!(queue.admit(), Err(QueueError::Full { .. })));
        drop(first);
        let third = queue.admit().unwrap();
        drop((second, third));
        assert_eq!(queue.admitted(), 0);
    }

    #[tokio::test]
    async fn jobs_see_interrupts_and_shutdown() {
        let queue = Arc::new(JobQueue::new(2));
        let ticket = queue.admit().unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let running = {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue
                    .run(Some(ticket), "txt2img", 1, move |job| {
                        started_tx.send(()).unwrap();
                        while !job.token().is_cancelled() {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        "cancelled"
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(queue.current().map(|job| job.kind), Some("txt2img"));
        assert!(queue.interrupt());
        assert_eq!(running.await.unwrap(), Ok("cancelled"));
        assert!(queue.current().is_none());
        queue.shut_down();
        assert_eq!(queue.admit().err(), Some(QueueError::ShuttingDown));
        let refused = queue.run(None, "load checkpoint", 1, |_| ()).await;
        assert_eq!(refused, Err(QueueError::ShuttingDown));
    }
}
