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

use super::{StoreError, StoreResult};

/// The writing of one batch: one result per job, in order.
pub(super) type BatchFuture<'a, R> = Pin<Box<dyn Future<Output = StoreResult<Vec<R>>> + Send + 'a>>;

type Reply<R> = oneshot::Sender<StoreResult<R>>;

/// A queue of jobs to a writer thread that writes them in batches.
#[derive(Debug)]
pub(super) struct GroupCommit<J, R> {
    jobs: mpsc::UnboundedSender<(J, Reply<R>)>,
}

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

/// The writer is gone (the store is shutting down).
fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Starts the writer thread `name`; `run` writes a batch of at most `max_batch`
    /// jobs on `pool` in one transaction. The thread ends when every handle is dropped.
    pub(super) fn start<P, F>(
        name: &str,
        pool: P,
        max_batch: usize,
        run: F,
    ) -> std::io::Result<Self>
    where
        P: Send + 'static,
        F: for<'a> Fn(&'a P, &'a [J]) -> BatchFuture<'a, R> + Send + 'static,
    {
        let (jobs, mut queue) = mpsc::unbounded_channel::<(J, Reply<R>)>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut batch = Vec::with_capacity(max_batch);
                    while queue.recv_many(&mut batch, max_batch.max(1)).await > 0 {
                        let (jobs, replies): (Vec<J>, Vec<Reply<R>>) = batch.drain(..).unzip();
                        write(&pool, &run, &jobs, replies).await;
                    }
                });
            })?;
        Ok(Self { jobs })
    }

    /// Queues `job` and waits until its batch is written.
    pub(super) async fn submit(&self, job: J) -> StoreResult<R> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send((job, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Writes one batch and answers each job; a failed batch is written again one job at
/// a time.
async fn write<P, J, R, F>(pool: &P, run: &F, jobs: &[J], replies: Vec<Reply<R>>)
where
    F: for<'a> Fn(&'a P, &'a [J]) -> BatchFuture<'a, R>,
{
    match run(pool, jobs).await {
        Ok(results) if results.len() == jobs.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Corrupt {
                    column: "group commit results",
                }));
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
                    .and_then(|mut r| r.pop().ok_or_else(stopped));
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
    fn insert_all<'a>(pool: &'a SqlitePool, values: &'a [i64]) -> BatchFuture<'a, usize> {
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
        let writer =
            GroupCommit::start("test-writer", pool.clone(), 64, insert_all).expect("writer thread");
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
        // one connection is held until all 20 are queued.
        let held = pool.acquire().await.expect("connection");
        let (many, ()) = tokio::join!(join_all((10..30).map(|v| writer.submit(v))), async {
            drop(held);
        });
        let largest = many.into_iter().filter_map(Result::ok).max();
        assert!(largest >= Some(19), "batches too small: {largest:?}");
    }
}
