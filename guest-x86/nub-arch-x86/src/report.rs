//! Bounded message formatting for panics and aborts (no heap).

use core::fmt;

/// A `fmt::Write` sink over a fixed buffer that silently truncates (at a
/// UTF-8 character boundary) once full.
#[derive(Debug)]
pub struct BoundedWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> BoundedWriter<'a> {
    /// A writer filling `buf` from the start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for BoundedWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + take),
            s.as_bytes().get(..take),
        ) {
            dst.copy_from_slice(src);
            self.len += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn truncates_on_char_boundary() {
        let mut buf = [0u8; 5];
        let mut w = BoundedWriter::new(&mut buf);
        let tail = "çç";
        write!(w, "ab{tail}").unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(&buf[..4], "abç".as_bytes());
    }
}
