//! Graceful drain: one signal that tells accept loops to stop and connections to finish, and a
//! count of open connections to wait on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    started: Notify,
    forced: AtomicBool,
    force: Notify,
    open: AtomicUsize,
    closed: Notify,
}

impl Drain {
    /// Starts draining (idempotent).
    pub(crate) fn start(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.started.notify_waiters();
            if self.open.load(Ordering::SeqCst) == 0 {
                self.closed.notify_waiters();
            }
        }
    }

    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Completes once draining has started.
    pub(crate) async fn signaled(&self) {
        loop {
            let notified = self.started.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.draining.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Ends the grace period: connections still open are closed now.
    pub(crate) fn force(&self) {
        self.start();
        if !self.forced.swap(true, Ordering::SeqCst) {
            self.force.notify_waiters();
        }
    }

    #[inline]
    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }

    /// Completes once the grace period has ended.
    pub(crate) async fn forced(&self) {
        loop {
            let notified = self.force.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.forced.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Completes once no connection is open (call after `start`).
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a connection open until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, gauge: &Gauge) -> ConnGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        gauge.inc();
        ConnGuard { drain: self.clone(), gauge: gauge.clone() }
    }

    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// An open downstream connection (or the tunnel it became).
#[derive(Debug)]
pub(crate) struct ConnGuard {
    drain: Arc<Drain>,
    gauge: Gauge,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        if self.drain.open.fetch_sub(1, Ordering::SeqCst) == 1 && self.drain.is_draining() {
            self.drain.closed.notify_waiters();
        }
    }
}
