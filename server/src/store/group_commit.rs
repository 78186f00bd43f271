//! Group commit of device exchanges. They are many and small; written one transaction
//! each, SQLite's one writer spends its time handing statements to SQLite's thread and
//! waiting to be polled again on a runtime busy with TLS, and PostgreSQL spends a
//! `BEGIN`, a `COMMIT` and a flush of its log on each. Here they queue to a writer of
//! their own, on a thread of its own (a single-threaded runtime, so every answer from
//! the database is picked up at once), which takes every exchange waiting, up to a
//! bound, and writes them in one transaction.
//!
//! A batch that fails is written again one exchange at a time, so one bad exchange
//! fails alone and the others are not lost.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

/// The writing of one batch: one result per job, in order.
pub(super) type BatchFuture<'a, R, E> =
    Pin<Box<dyn Future<Output = Result<Vec<R>, E>> + Send + 'a>>;

type Reply<R, E> = oneshot::Sender<Result<R, E>>;

/// A queue of jobs to a writer thread that writes them in batches.
#[derive(Debug)]
pub(super) struct GroupCommit<J, R, E> {
    jobs: mpsc::UnboundedSender<(J, Reply<R, E>)>,
    /// The error of a job the writer lost (it stopped, or answered for fewer jobs).
    lost: fn() -> E,
}

impl<J, R, E> Clone for GroupCommit<J, R, E> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            lost: self.lost,
        }
    }
}

impl<J, R, E> GroupCommit<J, R, E>
where
    J: Send + 'static,
    R: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    /// Starts the writer thread `name`; `run` writes a batch of at most `max_batch`
    /// jobs on `pool` in one transaction; `lost` is the error of a job the writer lost.
    /// The thread ends when every handle is dropped.
    pub(super) fn start<P, F>(
        name: &str,
        pool: P,
        max_batch: usize,
        run: F,
        lost: fn() -> E,
    ) -> std::io::Result<Self>
    where
        P: Send + 'static,
        F: for<'a> Fn(&'a P, &'a [J]) -> BatchFuture<'a, R, E> + Send + 'static,
    {
        let (jobs, mut queue) = mpsc::unbounded_channel::<(J, Reply<R, E>)>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut batch = Vec::with_capacity(max_batch);
                    while queue.recv_many(&mut batch, max_batch.max(1)).await > 0 {
                        let (jobs, replies): (Vec<J>, Vec<Reply<R, E>>) = batch.drain(..).unzip();
                        write(&pool, &run, lost, &jobs, replies).await;
                    }
                });
            })?;
        Ok(Self { jobs, lost })
    }

    /// Queues `job` and waits until its batch is written.
    pub(super) async fn submit(&self, job: J) -> Result<R, E> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send((job, reply)).map_err(|_| (self.lost)())?;
        answer.await.map_err(|_| (self.lost)())?
    }
}

/// Writes one batch and answers each job; a failed batch is written again one job at
/// a time.
async fn write<P, J, R, E, F>(
    pool: &P,
    run: &F,
    lost: fn() -> E,
    jobs: &[J],
    replies: Vec<Reply<R, E>>,
) where
    E: std::fmt::Display,
    F: for<'a> Fn(&'a P, &'a [J]) -> BatchFuture<'a, R, E>,
{
    match run(pool, jobs).await {
        Ok(results) if results.len() == jobs.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(lost()));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(jobs = jobs.len(), error = %e, "a batch failed; writing its jobs one at a time");
            for (job, reply) in jobs.chunks(1).zip(replies) {
                let result = run(pool, job)
                    .await
                    .and_then(|mut r| r.pop().ok_or_else(lost));
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::join_all;
    use sqlx::SqlitePool;

    use super::*;

    /// Inserts each value; answers each with the size of its batch.
    fn insert_all<'a>(
        pool: &'a SqlitePool,
        values: &'a [i64],
    ) -> BatchFuture<'a, usize, sqlx::Error> {
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            for v in values {
                sqlx::query("INSERT INTO t (v) VALUES (?)")
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(vec![values.len(); values.len()])
        })
    }

    #[tokio::test]
    async fn jobs_are_written_together_and_a_bad_one_fails_alone() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        sqlx::query("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .expect("table");
        let writer = GroupCommit::start("test-writer", pool.clone(), 64, insert_all, || {
            sqlx::Error::PoolClosed
        })
        .expect("writer thread");
        // 1 is written twice: that job fails, the others are written.
        let values = [1, 2, 3, 1, 4, 5, 6, 7];
        let results = join_all(values.iter().map(|v| writer.submit(*v))).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 1, "{results:?}");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(count, 7);
        // Jobs that queue while the writer waits for the database go in one batch: the
        // one connection is held until all 20 are queued, so the writer's first batch
        // (whatever had arrived when it woke) and the rest make two, one of 10 or more.
        // Written one at a time, every batch would hold one job.
        let held = pool.acquire().await.expect("connection");
        let (many, ()) = tokio::join!(join_all((10..30).map(|v| writer.submit(v))), async {
            drop(held);
        });
        let largest = many.into_iter().filter_map(Result::ok).max();
        assert!(largest >= Some(10), "batches too small: {largest:?}");
    }
}
