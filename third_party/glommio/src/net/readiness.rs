// QUIVER PATCH (4): readiness of a descriptor glommio does not own.
//
// Quiver drives quinn's endpoints on glommio shards. quinn does its own non-blocking
// `recvmsg`/`sendmsg` (quinn-udp, with GRO/GSO and ECN) and only needs to be told when to
// try again, as tokio's `poll_recv_ready` does. glommio has the io_uring `POLL_ADD` sources
// for this (`Reactor::poll_read_ready`/`poll_write_ready`) but keeps them crate-private.
//
//! Readiness of a file descriptor owned by the caller, through io_uring `POLL_ADD`.
use crate::{sys::Source, Reactor};
use std::{
    os::unix::io::RawFd,
    rc::{Rc, Weak},
    task::{Context, Poll},
};

/// Tells a task when a descriptor it owns may be read or written again.
///
/// Use it like tokio's readiness API: try the non-blocking operation first; when it fails
/// with `WouldBlock`, call [`FdReadiness::poll_readable`] (or `poll_writable`). It returns
/// `Ready` if a poll armed earlier has fired since (try again), and otherwise arms a
/// one-shot `POLL_ADD` and returns `Pending`; the task is woken when it fires. One waker
/// per direction is kept (the latest), so polling it repeatedly does not accumulate
/// waker references.
///
/// The descriptor must stay open while this exists. Must be created and used on one
/// executor thread.
#[derive(Debug)]
pub struct FdReadiness {
    reactor: Weak<Reactor>,
    fd: RawFd,
    read: Option<Source>,
    write: Option<Source>,
}

impl FdReadiness {
    /// Watches `fd` from the current executor.
    pub fn new(fd: RawFd) -> FdReadiness {
        FdReadiness {
            reactor: Rc::downgrade(&crate::executor().reactor()),
            fd,
            read: None,
            write: None,
        }
    }

    /// `Ready` once `fd` may be readable (an armed poll fired); otherwise arms one and
    /// registers `cx` to be woken.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (reactor, fd) = (&self.reactor, self.fd);
        poll_ready(&mut self.read, cx, || reactor.upgrade().map(|r| r.poll_read_ready(fd)))
    }

    /// Forgets a read readiness that has fired and not been reported yet: the caller has
    /// read since, so it is stale. An armed poll that has not fired stays armed.
    pub fn clear_readable(&mut self) {
        if self.read.as_ref().is_some_and(|s| s.result().is_some()) {
            self.read = None;
        }
    }

    /// `Ready` once `fd` may be writable; otherwise arms a poll and registers `cx`.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (reactor, fd) = (&self.reactor, self.fd);
        poll_ready(&mut self.write, cx, || reactor.upgrade().map(|r| r.poll_write_ready(fd)))
    }
}

fn poll_ready(
    slot: &mut Option<Source>,
    cx: &mut Context<'_>,
    arm: impl FnOnce() -> Option<Source>,
) -> Poll<()> {
    if let Some(source) = slot {
        if source.result().is_some() {
            *slot = None;
            return Poll::Ready(());
        }
    } else {
        match arm() {
            Some(source) => *slot = Some(source),
            // The executor is gone: nothing will ever wake us, so let the caller retry
            // (and fail) instead of hanging.
            None => return Poll::Ready(()),
        }
    }
    slot.as_ref()
        .expect("armed above")
        .add_waiter_single(cx.waker());
    Poll::Pending
}
