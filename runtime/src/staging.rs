//! A reserved staging buffer: assemble in place, knowing the final address,
//! then keep only what was used.
//!
//! For dynasm: `let mut s = tx.reserve(max, 16)?;` then either assemble with
//! `dynasmrt::VecAssembler::new(s.addr())` and copy the bytes into
//! `s.buf()`, or write into `s.buf()` directly; then `s.finish(used)?`
//! returns the [`Blob`] and gives the tail back to the allocator. Dropping a
//! `Staging` unfinished frees the whole reservation.

use crate::code_memory::{Blob, State};
use crate::tx_buffers::TxBuffers;
use crate::{Error, Runtime};

/// A reservation made by [`crate::Transaction::reserve`]; borrows the
/// transaction until finished or dropped.
pub struct Staging<'t> {
    pub(crate) rt: &'t Runtime,
    pub(crate) buf: &'t mut TxBuffers,
    pub(crate) blob: Option<Blob>,
}

impl Staging<'_> {
    /// The final executable address of the first byte.
    pub fn addr(&self) -> usize {
        self.blob.map_or(0, |b| b.addr())
    }

    /// The reserved length.
    pub fn capacity(&self) -> usize {
        self.blob.map_or(0, |b| b.len())
    }

    /// The writable bytes (the RW view of the reservation; in poison mode
    /// they start filled with the trap instruction).
    pub fn buf(&mut self) -> &mut [u8] {
        match self.blob {
            Some(b) => self.rt.mem().staged_slice(b),
            None => &mut [],
        }
    }

    /// Keeps the first `used` bytes as a staged blob of the transaction and
    /// returns the rest to the allocator. `used` larger than the reservation
    /// is [`Error::InvalidArgument`] (and the reservation is freed).
    pub fn finish(mut self, used: usize) -> Result<Blob, Error> {
        let blob = self.blob.take().ok_or(Error::InvalidBlob)?;
        match self.rt.mem().shrink(blob, used) {
            Ok(b) => {
                self.buf.add_staged(b);
                Ok(b)
            }
            Err(e) => {
                let _ = self.rt.mem().free_all(&[blob], State::Staged);
                Err(e)
            }
        }
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.blob.take() {
            let _ = self.rt.mem().free_all(&[b], State::Staged);
        }
    }
}
