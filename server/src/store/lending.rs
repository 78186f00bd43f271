//! Connections to the SQLite file, lent out one borrower at a time: the readers, and
//! the one writer.
//!
//! sqlx's pool pings a connection when it is taken and again when it is given back,
//! each a round trip to the connection's thread (the one when given back also in a
//! task of its own, during which the connection is lent to no one): on the device path
//! that tripled the cost of a read, and added a round trip to every write. A
//! connection to a file in this process is not broken from outside, so these are lent
//! without a ping. A statement left unfinished (its request timed out) is harmless:
//! sqlx's connection thread finishes one command before the next, and a transaction
//! dropped unfinished queues its rollback on that thread before the next borrower's
//! first command.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// A fixed set of connections; a borrower waits (first come, first served) while all
/// are lent.
pub(crate) struct Lender<C> {
    idle: Mutex<Vec<C>>,
    permits: Semaphore,
    size: usize,
}

impl<C> fmt::Debug for Lender<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lender")
            .field("size", &self.size)
            .field("available", &self.permits.available_permits())
            .finish()
    }
}

/// A lent connection; given back when dropped.
pub(crate) struct Lease<'a, C> {
    pool: &'a Lender<C>,
    connection: Option<C>,
    _permit: SemaphorePermit<'a>,
}

impl<C> Lender<C> {
    /// A pool of these connections.
    pub(crate) fn new(connections: Vec<C>) -> Self {
        let size = connections.len();
        Self {
            idle: Mutex::new(connections),
            permits: Semaphore::new(size),
            size,
        }
    }

    /// Borrows a connection; `None` once the pool is closed.
    pub(crate) async fn get(&self) -> Option<Lease<'_, C>> {
        let permit = self.permits.acquire().await.ok()?;
        let connection = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // A permit is held for every lent connection, so one is idle here.
        connection.map(|connection| Lease {
            pool: self,
            connection: Some(connection),
            _permit: permit,
        })
    }

    /// Waits until every connection is back, refuses further borrowing and returns
    /// the connections (to be closed).
    pub(crate) async fn close(&self) -> Vec<C> {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let held = self.permits.acquire_many(all).await;
        self.permits.close();
        drop(held);
        std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<C> Deref for Lease<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        // Present from the lease's creation until its drop.
        self.connection.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<C> DerefMut for Lease<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.connection.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(connection);
        }
        // The permit is released after this, when the field drops.
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[tokio::test]
    async fn a_borrower_waits_until_a_connection_is_given_back() {
        let pool = Lender::new(vec![1_u32, 2]);
        let a = pool.get().await.expect("open");
        let b = pool.get().await.expect("open");
        assert_ne!(*a, *b);
        let mut third = std::pin::pin!(pool.get());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            third.as_mut().poll(&mut cx).is_pending(),
            "a third borrower waits while both are lent"
        );
        let given_back = *a;
        drop(a);
        let c = third.await.expect("open");
        assert_eq!(
            *c, given_back,
            "the waiting borrower gets the connection given back"
        );
        drop((b, c));
        let mut closed = pool.close().await;
        closed.sort_unstable();
        assert_eq!(closed, vec![1, 2], "close returns every connection");
        assert!(pool.get().await.is_none(), "a closed pool lends nothing");
    }
}
