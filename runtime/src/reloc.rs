//! Relocations applied while staging, for backends (Cranelift) that emit
//! position-independent bytes plus a list of fix-ups.
//!
//! The runtime knows two kinds; a JIT maps its backend's kinds onto them
//! (Cranelift's `Abs8` to [`RelocKind::Abs8`]; `X86PCRel4`, `X86CallPCRel4`
//! and `X86CallPLTRel4` to [`RelocKind::PcRel4`], with the addend Cranelift
//! gives, usually -4). Every offset and value is checked.

use crate::Error;

/// What a relocation writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelocKind {
    /// 8 bytes, little-endian: `target + addend`.
    Abs8,
    /// 4 bytes, little-endian, signed: `target + addend - (blob_addr +
    /// offset)`; [`Error::OutOfRange`] if it does not fit an `i32`.
    PcRel4,
}

/// One fix-up of staged code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reloc {
    /// Where in the code the value goes.
    pub offset: usize,
    /// What value, and how wide.
    pub kind: RelocKind,
    /// The address referred to. One inside the code region must be a live
    /// blob or one staged by the same transaction (checked again at commit).
    pub target: usize,
    /// Added to the target.
    pub addend: i64,
}

/// Writes `r` into `buf`, the staged bytes of the blob at `blob_addr`.
pub(crate) fn apply(buf: &mut [u8], blob_addr: usize, r: &Reloc) -> Result<(), Error> {
    let width = match r.kind {
        RelocKind::Abs8 => 8,
        RelocKind::PcRel4 => 4,
    };
    let end = r
        .offset
        .checked_add(width)
        .filter(|&e| e <= buf.len())
        .ok_or(Error::InvalidArgument("relocation outside the code"))?;
    let value = r.target as i128 + r.addend as i128;
    match r.kind {
        RelocKind::Abs8 => {
            let v = u64::try_from(value)
                .map_err(|_| Error::InvalidArgument("relocation value overflows 64 bits"))?;
            buf[r.offset..end].copy_from_slice(&v.to_le_bytes());
        }
        RelocKind::PcRel4 => {
            let place = blob_addr as i128 + r.offset as i128;
            let v = i32::try_from(value - place).map_err(|_| Error::OutOfRange)?;
            buf[r.offset..end].copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(())
}
