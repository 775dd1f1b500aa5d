//! Shipping core-local buffers to other cores without copying them.
//!
//! Record bytes live in glommio DMA buffers that are reference-counted with `Rc` and
//! therefore belong to the core that allocated them. A fetch served on another core
//! still wants those exact bytes (zero copy). [`home_bytes`] wraps a core-local owner in
//! a `bytes::Bytes` that may travel anywhere: the bytes are only read, never written,
//! while shared, and the owner is dropped back on its home thread: a foreign drop pushes
//! it onto the home thread's graveyard queue, which the home thread drains
//! ([`drain_graveyard`]). This is Seastar's `foreign_ptr`, the model Redpanda uses.

use std::sync::Arc;
use std::thread::{self, ThreadId};

use bytes::Bytes;
use crossbeam::queue::SegQueue;

/// Something that owns bytes and must be dropped on the thread that created it.
pub trait LocalOwner: 'static {
    fn bytes(&self) -> &[u8];
}

impl LocalOwner for std::rc::Rc<glommio::io::DmaBuffer> {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl LocalOwner for glommio::io::ReadResult {
    fn bytes(&self) -> &[u8] {
        self
    }
}

// The box is never read: it is held only so it can be dropped on its home thread.
#[allow(dead_code)]
struct Tomb(Box<dyn LocalOwner>);
// SAFETY: a Tomb is only ever created on the owner's home thread and only ever dropped
// (or otherwise touched) there: foreign threads merely move it into the home queue.
unsafe impl Send for Tomb {}

type Graveyard = Arc<SegQueue<Tomb>>;

thread_local! {
    static GRAVEYARD: Graveyard = Arc::new(SegQueue::new());
}

struct HomeOwned {
    owner: Option<Box<dyn LocalOwner>>,
    ptr: *const u8,
    len: usize,
    home: ThreadId,
    graveyard: Graveyard,
}

// SAFETY: the owner is never cloned or dropped off its home thread (see Drop), and the
// memory behind `ptr..ptr+len` is immutable for as long as any owner is alive: DMA
// buffers are frozen before they are shared and read results are never written to.
unsafe impl Send for HomeOwned {}
// SAFETY: shared access only reads the immutable bytes.
unsafe impl Sync for HomeOwned {}

impl AsRef<[u8]> for HomeOwned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len were taken from the owner's slice, which stays alive and
        // unmodified until this value is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for HomeOwned {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            if thread::current().id() == self.home {
                drop(owner);
            } else {
                self.graveyard.push(Tomb(owner));
            }
        }
    }
}

/// Wraps a core-local owner as `Bytes` usable on any thread. Must be called on the
/// owner's home thread.
pub fn home_bytes<O: LocalOwner>(owner: O) -> Bytes {
    let slice = owner.bytes();
    let (ptr, len) = (slice.as_ptr(), slice.len());
    let graveyard = GRAVEYARD.with(Arc::clone);
    Bytes::from_owner(HomeOwned {
        owner: Some(Box::new(owner)),
        ptr,
        len,
        home: thread::current().id(),
        graveyard,
    })
}

/// Drops the owners that other threads returned to this one. Returns how many.
pub fn drain_graveyard() -> usize {
    GRAVEYARD.with(|g| {
        let mut n = 0;
        while let Some(tomb) = g.pop() {
            drop(tomb);
            n += 1;
        }
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    struct Counted(Vec<u8>, Rc<Cell<u32>>);
    impl LocalOwner for Counted {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
        }
    }

    #[test]
    fn foreign_drop_returns_home() {
        let drops = Rc::new(Cell::new(0));
        let b = home_bytes(Counted(vec![1, 2, 3], drops.clone()));
        let slice = b.slice(1..);
        drop(b); // the foreign thread now holds the last reference
        let handle = std::thread::spawn(move || {
            assert_eq!(&slice[..], &[2, 3]);
            drop(slice);
        });
        handle.join().unwrap();
        assert_eq!(drops.get(), 0, "dropped off its home thread");
        assert_eq!(drain_graveyard(), 1);
        assert_eq!(drops.get(), 1);
    }
}
