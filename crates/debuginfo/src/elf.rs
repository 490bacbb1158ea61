//! An in-memory ELF object that describes JIT code to a debugger.
//!
//! GDB's JIT reader (GDB manual, "JIT Compilation Interface") opens the object
//! from memory with BFD and takes every allocated section's address as the
//! runtime address, so the object is laid out as if already loaded:
//!
//! - `.text` is `SHT_NOBITS` (the code stays where the JIT put it, nothing is
//!   copied) with `sh_addr` at the lowest function and a size that spans all.
//! - The file is `ET_EXEC`, so each symbol's `st_value` is its absolute
//!   address (ELF gABI, "Symbol Values"); one `STT_FUNC` symbol a function.
//! - DWARF 4 (`.debug_info`, `.debug_abbrev`, `.debug_line`, `.debug_ranges`,
//!   `.debug_frame`) holds absolute addresses too, so there are no relocations.
//!
//! GDB re-reads every registered object on each registration, so callers
//! should put many functions in one image.

use crate::{regs, Cfa, Error, FrameRow, FunctionInfo};
use gimli::write::{
    Address, AttributeValue, CallFrameInstruction, CommonInformationEntry, DwarfUnit, EndianVec,
    FileId, FrameDescriptionEntry, FrameTable, LineProgram, LineString, Range, RangeList, Sections,
};
use gimli::{Encoding, Format, LineEncoding, LittleEndian, Register};
use object::elf;
use object::write::elf::{FileHeader, SectionHeader, Sym, Writer};
use object::write::StringId;
use std::path::Path;

/// DWARF 4: every gdb and perf in use reads it, and its range lists and line
/// tables need no string sections.
const ENCODING: Encoding = Encoding {
    format: Format::Dwarf32,
    version: 4,
    address_size: 8,
};

/// The ELF image describing `functions` (any order; they must not overlap).
pub fn image(functions: &[FunctionInfo]) -> Result<Vec<u8>, Error> {
    let mut sorted: Vec<&FunctionInfo> = functions.iter().collect();
    for f in &sorted {
        f.validate()?;
    }
    sorted.sort_by_key(|f| f.addr);
    for pair in sorted.windows(2) {
        if pair[0].end() > pair[1].addr {
            return Err(Error::Overlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    let debug = if sorted.is_empty() {
        Vec::new()
    } else {
        dwarf(&sorted)?
    };
    write_elf(&sorted, &debug)
}

/// The non-empty DWARF sections, by name.
fn dwarf(functions: &[&FunctionInfo]) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
    let mut dwarf = DwarfUnit::new(ENCODING);
    let first_file = functions.iter().find_map(|f| f.file.as_deref());
    if let Some(first) = first_file {
        dwarf.unit.line_program = LineProgram::new(
            ENCODING,
            LineEncoding::default(),
            LineString::String(b".".to_vec()),
            LineString::String(first.as_bytes().to_vec()),
            None,
        );
    }

    let root = dwarf.unit.root();
    let cu = dwarf.unit.get_mut(root);
    cu.set(gimli::DW_AT_producer, string("jitvm-debuginfo"));
    cu.set(gimli::DW_AT_name, string(first_file.unwrap_or("jitvm")));
    cu.set(gimli::DW_AT_comp_dir, string("."));
    // DWARF 4 section 2.17.3: range list entries are relative to the unit's
    // base address, its low_pc; 0 makes them absolute.
    cu.set(
        gimli::DW_AT_low_pc,
        AttributeValue::Address(Address::Constant(0)),
    );
    let ranges = RangeList(
        functions
            .iter()
            .map(|f| Range::StartLength {
                begin: Address::Constant(f.addr),
                length: f.len,
            })
            .collect(),
    );
    let ranges = dwarf.unit.ranges.add(ranges);
    dwarf
        .unit
        .get_mut(root)
        .set(gimli::DW_AT_ranges, AttributeValue::RangeListRef(ranges));

    for f in functions {
        let file = f
            .file
            .as_deref()
            .map(|file| add_file(&mut dwarf.unit.line_program, file));
        let id = dwarf.unit.add(root, gimli::DW_TAG_subprogram);
        let entry = dwarf.unit.get_mut(id);
        entry.set(gimli::DW_AT_name, string(&f.name));
        entry.set(gimli::DW_AT_external, AttributeValue::Flag(true));
        entry.set(
            gimli::DW_AT_low_pc,
            AttributeValue::Address(Address::Constant(f.addr)),
        );
        // DWARF 4 section 2.17.2: a constant high_pc is the length.
        entry.set(gimli::DW_AT_high_pc, AttributeValue::Udata(f.len));
        let Some(file) = file else { continue };
        entry.set(
            gimli::DW_AT_decl_file,
            AttributeValue::FileIndex(Some(file)),
        );
        if let Some(first) = f.lines.first() {
            entry.set(
                gimli::DW_AT_decl_line,
                AttributeValue::Udata(first.line.into()),
            );
        }
        if f.lines.is_empty() {
            continue;
        }
        // One sequence a function (DWARF 4 section 6.2.5.3), since the
        // functions need not be contiguous.
        let program = &mut dwarf.unit.line_program;
        program.begin_sequence(Some(Address::Constant(f.addr)));
        for row in &f.lines {
            let next = program.row();
            next.address_offset = row.offset.into();
            next.file = file;
            next.line = row.line.into();
            next.column = row.column.into();
            program.generate_row();
        }
        program.end_sequence(f.len);
    }

    let mut sections = Sections::new(EndianVec::new(LittleEndian));
    dwarf.write(&mut sections)?;
    frame_table(functions).write_debug_frame(&mut sections.debug_frame)?;

    let mut out = Vec::new();
    sections.for_each(|id, section| {
        if !section.slice().is_empty() {
            out.push((id.name(), section.slice().to_vec()));
        }
        Ok::<_, Error>(())
    })?;
    Ok(out)
}

fn string(s: &str) -> AttributeValue {
    AttributeValue::String(s.as_bytes().to_vec())
}

/// The line-table file for `path`: its directory, then its name.
fn add_file(program: &mut LineProgram, path: &str) -> FileId {
    let path_ref = Path::new(path);
    let name = path_ref
        .file_name()
        .map_or(path, |n| n.to_str().unwrap_or(path));
    let directory = match path_ref.parent().and_then(Path::to_str) {
        Some(dir) if !dir.is_empty() => program.add_directory(LineString::String(dir.into())),
        _ => program.default_directory(),
    };
    program.add_file(LineString::String(name.into()), directory, None)
}

/// `.debug_frame` (DWARF 4 section 6.4): a CIE with the rule at every
/// function's first instruction (CFA = rsp + 8, return address at CFA - 8),
/// and an FDE a function that has frame rows.
fn frame_table(functions: &[&FunctionInfo]) -> FrameTable {
    let mut table = FrameTable::default();
    // CFI version 1 is what .debug_frame readers have accepted longest.
    let cfi = Encoding {
        version: 1,
        ..ENCODING
    };
    let mut cie = CommonInformationEntry::new(cfi, 1, -8, Register(regs::RA));
    cie.add_instruction(CallFrameInstruction::Cfa(Register(regs::RSP), 8));
    cie.add_instruction(CallFrameInstruction::Offset(Register(regs::RA), -8));
    let cie = table.add_cie(cie);
    for f in functions.iter().filter(|f| !f.frame.is_empty()) {
        // validate() bounds len by u32::MAX.
        let mut fde = FrameDescriptionEntry::new(Address::Constant(f.addr), f.len as u32);
        let mut state = FrameRow {
            offset: 0,
            cfa: Cfa::Rsp(8),
            saved: Vec::new(),
        };
        for row in &f.frame {
            for instruction in transition(&state, row) {
                fde.add_instruction(row.offset, instruction);
            }
            state = row.clone();
        }
        table.add_fde(cie, fde);
    }
    table
}

/// The instructions that turn the rules of `from` into those of `to`.
fn transition(from: &FrameRow, to: &FrameRow) -> Vec<CallFrameInstruction> {
    let mut out = Vec::new();
    if from.cfa != to.cfa {
        let (reg, off) = match to.cfa {
            Cfa::Rsp(off) => (regs::RSP, off),
            Cfa::Rbp(off) => (regs::RBP, off),
        };
        out.push(CallFrameInstruction::Cfa(Register(reg), off));
    }
    for &(reg, _) in &from.saved {
        if !to.saved.iter().any(|&(r, _)| r == reg) {
            // Back to the CIE's rule, which keeps the caller's value.
            out.push(CallFrameInstruction::Restore(Register(reg)));
        }
    }
    for &(reg, off) in &to.saved {
        if !from.saved.contains(&(reg, off)) {
            out.push(CallFrameInstruction::Offset(Register(reg), off));
        }
    }
    out
}

/// Lays the object out: header, DWARF sections, symbols, strings, section
/// headers.
fn write_elf(
    functions: &[&FunctionInfo],
    debug: &[(&'static str, Vec<u8>)],
) -> Result<Vec<u8>, Error> {
    let low = functions.first().map_or(0, |f| f.addr);
    let high = functions.last().map_or(0, |f| f.end());

    let mut buffer = Vec::new();
    let mut w = Writer::new(object::Endianness::Little, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_null_section_index();
    let text_name = w.add_section_name(b".text");
    let text = w.reserve_section_index();
    let debug: Vec<(StringId, usize, &[u8])> = debug
        .iter()
        .map(|(name, data)| {
            let name = w.add_section_name(name.as_bytes());
            w.reserve_section_index();
            (name, w.reserve(data.len(), 1), data.as_slice())
        })
        .collect();
    w.reserve_null_symbol_index();
    let names: Vec<StringId> = functions
        .iter()
        .map(|f| {
            w.reserve_symbol_index(Some(text));
            w.add_string(f.name.as_bytes())
        })
        .collect();
    w.reserve_symtab_section_index();
    w.reserve_symtab();
    w.reserve_strtab_section_index();
    w.reserve_strtab();
    w.reserve_shstrtab_section_index();
    w.reserve_shstrtab();
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })?;
    for &(_, offset, data) in &debug {
        w.pad_until(offset);
        w.write(data);
    }
    w.write_null_symbol();
    for (f, &name) in functions.iter().zip(&names) {
        w.write_symbol(&Sym {
            name: Some(name),
            section: Some(text),
            st_info: (elf::STB_GLOBAL << 4) | elf::STT_FUNC,
            st_other: elf::STV_DEFAULT,
            st_shndx: 0,
            st_value: f.addr,
            st_size: f.len,
        });
    }
    w.write_strtab();
    w.write_shstrtab();

    w.write_null_section_header();
    w.write_section_header(&SectionHeader {
        name: Some(text_name),
        sh_type: elf::SHT_NOBITS,
        sh_flags: (elf::SHF_ALLOC | elf::SHF_EXECINSTR).into(),
        sh_addr: low,
        sh_offset: 0,
        sh_size: high - low,
        sh_link: 0,
        sh_info: 0,
        sh_addralign: 1,
        sh_entsize: 0,
    });
    for &(name, offset, data) in &debug {
        w.write_section_header(&SectionHeader {
            name: Some(name),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: 0,
            sh_addr: 0,
            sh_offset: offset as u64,
            sh_size: data.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        });
    }
    // Only the null symbol is local.
    w.write_symtab_section_header(1);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    debug_assert_eq!(w.reserved_len(), w.len());
    Ok(buffer)
}
