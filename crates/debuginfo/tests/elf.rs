//! The image read back with object and gimli: what gdb would find in it.

use gimli::{EndianSlice, LittleEndian, UnwindSection};
use jitvm_debuginfo::{elf, regs, Cfa, Error, FrameRow, FunctionInfo, Invalid, LineRow};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

fn line(offset: u32, line: u32) -> LineRow {
    LineRow {
        offset,
        line,
        column: 1,
    }
}

fn two_functions() -> Vec<FunctionInfo> {
    vec![
        // Out of address order, and not contiguous.
        FunctionInfo {
            name: "jitvm:fib [baseline]".into(),
            addr: 0x7f00_0000_2000,
            len: 0x40,
            file: Some("/scripts/fib.bc".into()),
            lines: vec![line(0, 3), line(0x10, 4), line(0x30, 7)],
            frame: vec![
                FrameRow {
                    offset: 1,
                    cfa: Cfa::Rsp(16),
                    saved: vec![(regs::RBP, -16)],
                },
                FrameRow {
                    offset: 4,
                    cfa: Cfa::Rbp(16),
                    saved: vec![(regs::RBP, -16), (regs::RBX, -24)],
                },
                FrameRow {
                    offset: 0x3f,
                    cfa: Cfa::Rsp(8),
                    saved: vec![],
                },
            ],
        },
        FunctionInfo {
            name: "jitvm:stub".into(),
            addr: 0x7f00_0000_1000,
            len: 0x10,
            file: None,
            lines: vec![],
            frame: vec![],
        },
    ]
}

fn section<'a>(file: &object::File<'a>, name: &str) -> Slice<'a> {
    let data = file
        .section_by_name(name)
        .map(|s| s.data().expect("section data"))
        .unwrap_or(&[]);
    EndianSlice::new(data, LittleEndian)
}

fn dwarf<'a>(file: &object::File<'a>) -> gimli::Dwarf<Slice<'a>> {
    gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(section(file, id.name()))).expect("DWARF")
}

#[test]
fn an_image_names_every_function_and_maps_lines() {
    let image = elf::image(&two_functions()).expect("image");
    let file = object::File::parse(&*image).expect("an ELF object");
    assert_eq!(file.architecture(), object::Architecture::X86_64);
    assert!(file.sections().all(|s| s.relocations().next().is_none()));

    let text = file.section_by_name(".text").expect(".text");
    assert_eq!(text.address(), 0x7f00_0000_1000);
    assert_eq!(text.size(), 0x1040);
    // SHT_NOBITS: the code is not in the image.
    assert_eq!(text.kind(), SectionKind::UninitializedData);
    assert_eq!(text.file_range(), None);

    let mut symbols: Vec<_> = file
        .symbols()
        .map(|s| {
            (
                s.name().unwrap().to_string(),
                s.address(),
                s.size(),
                s.kind(),
            )
        })
        .collect();
    symbols.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        symbols,
        [
            (
                "jitvm:fib [baseline]".into(),
                0x7f00_0000_2000,
                0x40,
                SymbolKind::Text
            ),
            (
                "jitvm:stub".into(),
                0x7f00_0000_1000,
                0x10,
                SymbolKind::Text
            ),
        ]
    );

    let dwarf = dwarf(&file);
    let mut units = dwarf.units();
    let header = units.next().unwrap().expect("one unit");
    assert!(units.next().unwrap().is_none());
    let unit = dwarf.unit(header).unwrap();

    let mut subprograms = Vec::new();
    let mut entries = unit.entries();
    while let Some((_, entry)) = entries.next_dfs().unwrap() {
        if entry.tag() != gimli::DW_TAG_subprogram {
            continue;
        }
        let name = dwarf
            .attr_string(&unit, entry.attr_value(gimli::DW_AT_name).unwrap().unwrap())
            .unwrap();
        let low = match entry.attr_value(gimli::DW_AT_low_pc).unwrap() {
            Some(gimli::AttributeValue::Addr(a)) => a,
            other => panic!("low_pc {other:?}"),
        };
        let len = entry.attr_value(gimli::DW_AT_high_pc).unwrap().unwrap();
        subprograms.push((
            name.to_string().unwrap().to_string(),
            low,
            len.udata_value(),
        ));
    }
    assert_eq!(
        subprograms,
        [
            ("jitvm:stub".into(), 0x7f00_0000_1000, Some(0x10)),
            ("jitvm:fib [baseline]".into(), 0x7f00_0000_2000, Some(0x40)),
        ]
    );

    let mut ranges = Vec::new();
    let mut iter = dwarf.unit_ranges(&unit).unwrap();
    while let Some(r) = iter.next().unwrap() {
        ranges.push((r.begin, r.end));
    }
    ranges.sort();
    assert_eq!(
        ranges,
        [
            (0x7f00_0000_1000, 0x7f00_0000_1010),
            (0x7f00_0000_2000, 0x7f00_0000_2040)
        ]
    );

    let program = unit.line_program.clone().expect("a line program");
    let mut rows = program.rows();
    let mut seen = Vec::new();
    while let Some((header, row)) = rows.next_row().unwrap() {
        let file = row.file(header).expect("a file");
        let name = dwarf.attr_string(&unit, file.path_name()).unwrap();
        let dir = file.directory(header).map(|d| {
            dwarf
                .attr_string(&unit, d)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        });
        seen.push((
            row.address(),
            row.line().map(|l| l.get()),
            row.end_sequence(),
            format!("{}/{}", dir.unwrap_or_default(), name.to_string_lossy()),
        ));
    }
    let fib = "/scripts/fib.bc".to_string();
    assert_eq!(
        seen,
        [
            (0x7f00_0000_2000, Some(3), false, fib.clone()),
            (0x7f00_0000_2010, Some(4), false, fib.clone()),
            (0x7f00_0000_2030, Some(7), false, fib.clone()),
            (0x7f00_0000_2040, Some(7), true, fib.clone()),
        ]
    );
}

#[test]
fn the_frame_table_gives_each_offset_its_cfa_and_saved_registers() {
    let image = elf::image(&two_functions()).expect("image");
    let file = object::File::parse(&*image).expect("an ELF object");
    let mut frame = gimli::DebugFrame::from(section(&file, ".debug_frame"));
    frame.set_address_size(8);
    let bases = gimli::BaseAddresses::default();
    let mut context = gimli::UnwindContext::new();

    let rule_at = |context: &mut gimli::UnwindContext<usize>, addr: u64| {
        let row = frame
            .unwind_info_for_address(&bases, context, addr, gimli::DebugFrame::cie_from_offset)
            .expect("an FDE covers the address");
        let cfa = match *row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => (register.0, offset),
            ref other => panic!("CFA rule {other:?}"),
        };
        let mut saved: Vec<(u16, i64)> = row
            .registers()
            .filter_map(|(reg, rule)| match rule {
                gimli::RegisterRule::Offset(off) => Some((reg.0, *off)),
                _ => None,
            })
            .collect();
        saved.sort();
        (cfa, saved)
    };
    let fib = 0x7f00_0000_2000;
    let ra = (regs::RA, -8);
    assert_eq!(rule_at(&mut context, fib), ((regs::RSP, 8), vec![ra]));
    assert_eq!(
        rule_at(&mut context, fib + 1),
        ((regs::RSP, 16), vec![(regs::RBP, -16), ra])
    );
    assert_eq!(
        rule_at(&mut context, fib + 0x20),
        (
            (regs::RBP, 16),
            vec![(regs::RBX, -24), (regs::RBP, -16), ra]
        )
    );
    assert_eq!(
        rule_at(&mut context, fib + 0x3f),
        ((regs::RSP, 8), vec![ra])
    );
    // No frame rows, no FDE: gdb falls back to its own heuristics there.
    assert!(frame
        .unwind_info_for_address(
            &bases,
            &mut context,
            0x7f00_0000_1000,
            gimli::DebugFrame::cie_from_offset
        )
        .is_err());
}

fn problem(f: FunctionInfo) -> Invalid {
    match elf::image(&[f]) {
        Err(Error::Invalid { problem, .. }) => problem,
        other => panic!("expected an invalid function, got {other:?}"),
    }
}

#[test]
fn an_invalid_description_is_refused_with_the_rule_it_breaks() {
    let good = FunctionInfo {
        name: "f".into(),
        addr: 0x1000,
        len: 0x20,
        file: Some("f.bc".into()),
        lines: vec![line(0, 1), line(8, 2)],
        frame: vec![FrameRow {
            offset: 1,
            cfa: Cfa::Rsp(16),
            saved: vec![(regs::RBP, -16)],
        }],
    };
    elf::image(std::slice::from_ref(&good)).expect("the good one is fine");

    let zero = FunctionInfo {
        len: 0,
        lines: vec![],
        frame: vec![],
        ..good.clone()
    };
    assert_eq!(problem(zero), Invalid::ZeroLength);
    let nul = FunctionInfo {
        name: "f\0".into(),
        ..good.clone()
    };
    assert_eq!(problem(nul), Invalid::NulInName);
    let unsorted = FunctionInfo {
        lines: vec![line(8, 2), line(0, 1)],
        ..good.clone()
    };
    assert_eq!(
        problem(unsorted),
        Invalid::Unsorted {
            table: "line",
            index: 1
        }
    );
    let past_end = FunctionInfo {
        frame: vec![FrameRow {
            offset: 0x20,
            cfa: Cfa::Rsp(8),
            saved: vec![],
        }],
        ..good.clone()
    };
    assert_eq!(
        problem(past_end),
        Invalid::PastEnd {
            table: "frame",
            index: 0
        }
    );
    let odd_save = FunctionInfo {
        frame: vec![FrameRow {
            offset: 1,
            cfa: Cfa::Rsp(16),
            saved: vec![(regs::RBP, -12)],
        }],
        ..good.clone()
    };
    assert!(matches!(problem(odd_save), Invalid::BadSave { .. }));

    let neighbour = FunctionInfo {
        name: "g".into(),
        addr: 0x1010,
        ..good.clone()
    };
    assert!(matches!(
        elf::image(&[neighbour, good]),
        Err(Error::Overlap { .. })
    ));
}

#[test]
fn no_functions_make_an_image_with_nothing_in_it() {
    let image = elf::image(&[]).expect("image");
    let file = object::File::parse(&*image).expect("an ELF object");
    assert_eq!(file.symbols().count(), 0);
    assert!(file.section_by_name(".debug_info").is_none());
}

#[test]
fn registers_map_from_hardware_encoding_to_dwarf_numbers() {
    assert_eq!(regs::from_hw(0), Some(regs::RAX));
    assert_eq!(regs::from_hw(1), Some(regs::RCX));
    assert_eq!(regs::from_hw(2), Some(regs::RDX));
    assert_eq!(regs::from_hw(4), Some(regs::RSP));
    assert_eq!(regs::from_hw(5), Some(regs::RBP));
    assert_eq!(regs::from_hw(7), Some(regs::RDI));
    assert_eq!(regs::from_hw(12), Some(regs::R12));
    assert_eq!(regs::from_hw(16), None);
}
