//! Little-endian reader/writer helpers for the runtime's own byte formats (the example KV
//! service's commands and client wire protocol).
//!
//! Protocol messages and persistence-log records use the core's codec
//! ([`keel_core::codec`]), which is versioned, bounded, property-tested and fuzzed. Decoding here
//! never panics on bad input either: it returns [`DecodeError`].

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("record truncated at byte {at} (needed {needed} more)")]
    Truncated {
        /// Where the input ended.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A tag byte names no known variant.
    #[error("unknown {what} tag {tag} at byte {at}")]
    BadTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// Bytes were left over after the value.
    #[error("{extra} trailing bytes after the record")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// Appends little-endian values to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads little-endian values from a slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.at;
        if rest < n {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let rest = self.buf.len() - self.at;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= rest)
            .ok_or(DecodeError::Truncated {
                at: self.at,
                needed: usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(rest),
            })
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn at(&self) -> usize {
        self.at
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}
