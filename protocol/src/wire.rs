//! Little-endian primitives for frame bodies: a bounds-checked reader over `Bytes` and a
//! writer that keeps payload buffers as separate chunks instead of copying them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::limits::MAX_STRING_BYTES;

pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

macro_rules! get_int {
    ($name:ident, $t:ty) => {
        pub(crate) fn $name(&mut self, what: &'static str) -> Result<$t, FrameError> {
            const N: usize = std::mem::size_of::<$t>();
            let b = self.take(N, what)?;
            let mut a = [0u8; N];
            a.copy_from_slice(&b);
            Ok(<$t>::from_le_bytes(a))
        }
    };
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Short {
                what,
                needed: n - self.remaining(),
            });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    get_int!(u8, u8);
    get_int!(i8, i8);
    get_int!(u16, u16);
    get_int!(i16, i16);
    get_int!(u32, u32);
    get_int!(i32, i32);
    get_int!(i64, i64);

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, FrameError> {
        let len = self.u16(what)? as usize;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::NotUtf8)
    }

    /// A u32 length followed by that many bytes, as a view of the frame body.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, FrameError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    pub(crate) fn array16(&mut self, what: &'static str) -> Result<[u8; 16], FrameError> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b);
        Ok(a)
    }

    /// Everything left, as a view.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// A u32 element count, checked against `limit` and against the bytes left given that
    /// each element takes at least `min_element_bytes`, so a forged count cannot make the
    /// decoder reserve memory the input does not back.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_element_bytes: usize,
    ) -> Result<usize, FrameError> {
        let n = self.u32(what)? as usize;
        if n > limit {
            return Err(FrameError::TooMany {
                what,
                count: n,
                limit,
            });
        }
        let needed = n.saturating_mul(min_element_bytes.max(1));
        if needed > self.remaining() {
            return Err(FrameError::Short {
                what,
                needed: needed - self.remaining(),
            });
        }
        Ok(n)
    }

    pub(crate) fn finish(self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

/// Builds a frame body: small fields go into a scratch buffer, payloads are appended as
/// their own chunks (no copy).
#[derive(Default)]
pub(crate) struct Writer {
    chunks: Vec<Bytes>,
    scratch: BytesMut,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.scratch.put_u8(v);
    }
    pub(crate) fn i8(&mut self, v: i8) {
        self.scratch.put_i8(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.scratch.put_u16_le(v);
    }
    pub(crate) fn i16(&mut self, v: i16) {
        self.scratch.put_i16_le(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.scratch.put_u32_le(v);
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.scratch.put_i32_le(v);
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.scratch.put_i64_le(v);
    }
    pub(crate) fn array16(&mut self, v: &[u8; 16]) {
        self.scratch.put_slice(v);
    }

    /// Strings longer than [`MAX_STRING_BYTES`] are cut at a character boundary: callers
    /// validate names (topics <= 249 bytes) before they get here.
    pub(crate) fn string(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.scratch.put_slice(&s.as_bytes()[..end]);
    }

    /// A u32 length, then the chunks as they are.
    pub(crate) fn chunks(&mut self, chunks: &[Bytes]) {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        self.u32(len as u32);
        self.raw_chunks(chunks);
    }

    /// The chunks with no length in front (the payload runs to the end of the body).
    pub(crate) fn raw_chunks(&mut self, chunks: &[Bytes]) {
        for c in chunks {
            if c.is_empty() {
                continue;
            }
            // Small payloads are cheaper copied than sent as their own chunk.
            if c.len() <= 64 {
                self.scratch.put_slice(c);
            } else {
                self.flush();
                self.chunks.push(c.clone());
            }
        }
    }

    fn flush(&mut self) {
        if !self.scratch.is_empty() {
            self.chunks.push(self.scratch.split().freeze());
        }
    }

    pub(crate) fn into_chunks(mut self) -> Vec<Bytes> {
        self.flush();
        self.chunks
    }
}
