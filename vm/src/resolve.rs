//! Names to numbers: the parser's raw functions become a [`Module`] whose calls are function
//! indices, whose jumps are instruction indices and whose locals are slots; then each
//! function is verified.

use crate::bytecode::{FuncId, Function, Instr, Label, Module, Operands, Pos, MAX_PARAMS};
use crate::diag::{quote, Diagnostic, Diagnostics};
use crate::lex::{parse_literal, Token};
use crate::verify;
use std::collections::HashMap;

pub(crate) struct RawInstr<'a> {
    pub(crate) mnemonic: Token<'a>,
    pub(crate) operands: Vec<Token<'a>>,
    /// The instruction the mnemonic names, operands unresolved; `None` for a line already
    /// reported as malformed: it stays in the function as an opaque placeholder, so the
    /// verifier checks the rest without inventing errors around it.
    pub(crate) instr: Option<Instr>,
}

pub(crate) struct RawFunction<'a> {
    pub(crate) name: Token<'a>,
    pub(crate) params: Vec<Token<'a>>,
    pub(crate) locals: Vec<Token<'a>>,
    pub(crate) instrs: Vec<RawInstr<'a>>,
    /// Label name and the index of the instruction it precedes.
    pub(crate) labels: Vec<(Token<'a>, u32)>,
    pub(crate) end: Pos,
}

/// The module's functions by name, and each one's parameter count.
struct Names<'a> {
    index: HashMap<&'a str, FuncId>,
    arity: Vec<u32>,
}

/// What names mean inside one function: its parameters and locals, and its labels.
struct Scope<'a> {
    slots: HashMap<&'a str, u32>,
    num_slots: u32,
    labels: HashMap<&'a str, u32>,
}

pub(crate) fn resolve(
    raw: &[RawFunction<'_>],
    memory_cells: u64,
    errors: &mut Diagnostics,
) -> Module {
    let names = function_names(raw, errors);
    let functions = raw
        .iter()
        .map(|f| {
            let (mut function, opaque) = resolve_function(f, &names, errors);
            // Verified even when some instructions are broken: those are opaque to the
            // verifier, so what it reports is wrong whatever the broken lines meant.
            if let Err(e) = verify::verify(&mut function, &names.arity, &opaque) {
                errors.push(e);
            }
            function
        })
        .collect();
    Module {
        memory_cells,
        functions,
    }
}

fn function_names<'a>(raw: &[RawFunction<'a>], errors: &mut Diagnostics) -> Names<'a> {
    let mut names = Names {
        index: HashMap::new(),
        arity: Vec::with_capacity(raw.len()),
    };
    for (i, f) in raw.iter().enumerate() {
        if f.params.len() > MAX_PARAMS {
            errors.push(Diagnostic::at(
                f.params[MAX_PARAMS].pos,
                format!(
                    "function {} has {} parameters; at most {MAX_PARAMS} are allowed",
                    quote(f.name.text),
                    f.params.len()
                ),
            ));
        }
        if f.name.text.is_empty() {
            // A header that did not parse; already reported.
        } else if names.index.contains_key(f.name.text) {
            errors.push(Diagnostic::at(
                f.name.pos,
                format!("function {} is defined twice", quote(f.name.text)),
            ));
        } else {
            names.index.insert(f.name.text, i as FuncId);
        }
        names.arity.push(f.params.len() as u32);
    }
    names
}

fn function_scope<'a>(f: &RawFunction<'a>, errors: &mut Diagnostics) -> Scope<'a> {
    let mut slots: HashMap<&str, u32> = HashMap::new();
    for (i, name) in f.params.iter().chain(&f.locals).enumerate() {
        if slots.insert(name.text, i as u32).is_some() {
            let what = if i < f.params.len() {
                "parameter"
            } else {
                "local"
            };
            errors.push(Diagnostic::at(
                name.pos,
                format!(
                    "{what} {} is declared twice in {}",
                    quote(name.text),
                    quote(f.name.text)
                ),
            ));
        }
    }
    let mut labels: HashMap<&str, u32> = HashMap::new();
    for (name, at) in &f.labels {
        if labels.insert(name.text, *at).is_some() {
            errors.push(Diagnostic::at(
                name.pos,
                format!(
                    "label {} is defined twice in {}",
                    quote(name.text),
                    quote(f.name.text)
                ),
            ));
        }
    }
    Scope {
        slots,
        num_slots: (f.params.len() + f.locals.len()) as u32,
        labels,
    }
}

fn resolve_function(
    f: &RawFunction<'_>,
    names: &Names<'_>,
    errors: &mut Diagnostics,
) -> (Function, Vec<bool>) {
    let scope = function_scope(f, errors);
    let mut code = Vec::with_capacity(f.instrs.len());
    let mut positions = Vec::with_capacity(f.instrs.len() + 1);
    let mut opaque = Vec::with_capacity(f.instrs.len());
    for ins in &f.instrs {
        let resolved = match ins.instr {
            Some(instr) => resolve_instr(ins, instr, &scope, names).map_err(|e| errors.push(e)),
            None => Err(()),
        };
        opaque.push(resolved.is_err());
        code.push(resolved.unwrap_or(Instr::Nop));
        positions.push(ins.mnemonic.pos);
    }
    // The position just past the last instruction is that of `end`.
    positions.push(f.end);
    let function = Function {
        name: f.name.text.to_string(),
        params: f.params.iter().map(|t| t.text.to_string()).collect(),
        locals: f.locals.iter().map(|t| t.text.to_string()).collect(),
        code,
        positions,
        heights: Vec::new(),
        labels: f
            .labels
            .iter()
            .map(|(t, at)| Label {
                name: t.text.to_string(),
                target: *at,
                pos: t.pos,
            })
            .collect(),
        max_stack: 0,
        pos: f.name.pos,
    };
    (function, opaque)
}

/// Fills in the operands of `instr`, the instruction `ins` names.
fn resolve_instr(
    ins: &RawInstr<'_>,
    instr: Instr,
    scope: &Scope<'_>,
    names: &Names<'_>,
) -> Result<Instr, Diagnostic> {
    let func = |t: &Token<'_>| -> Result<FuncId, Diagnostic> {
        names
            .index
            .get(t.text)
            .copied()
            .ok_or_else(|| Diagnostic::at(t.pos, format!("unknown function {}", quote(t.text))))
    };
    let label = |t: &Token<'_>| -> Result<u32, Diagnostic> {
        scope
            .labels
            .get(t.text)
            .copied()
            .ok_or_else(|| Diagnostic::at(t.pos, format!("unknown label {}", quote(t.text))))
    };
    let local = |t: &Token<'_>| -> Result<u32, Diagnostic> {
        let num_slots = scope.num_slots;
        if t.text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            let n = parse_literal(t.text).map_err(|e| Diagnostic::at(t.pos, e))?;
            if n < 0 {
                return Err(Diagnostic::at(
                    t.pos,
                    format!("local index {n} is negative"),
                ));
            }
            if n >= num_slots as i64 {
                return Err(Diagnostic::at(
                    t.pos,
                    format!("local index {n} is out of range (the function has {num_slots} parameters and locals)"),
                ));
            }
            Ok(n as u32)
        } else {
            scope
                .slots
                .get(t.text)
                .copied()
                .ok_or_else(|| Diagnostic::at(t.pos, format!("unknown local {}", quote(t.text))))
        }
    };
    let ops = &ins.operands;
    let operands = match instr.operands() {
        Operands::None => Operands::None,
        Operands::Imm(_) => {
            Operands::Imm(parse_literal(ops[0].text).map_err(|e| Diagnostic::at(ops[0].pos, e))?)
        }
        Operands::Local(_) => Operands::Local(local(&ops[0])?),
        Operands::Label(_) => Operands::Label(label(&ops[0])?),
        Operands::Func(_) => Operands::Func(func(&ops[0])?),
        Operands::TwoFuncs(..) => {
            let (f, g) = (func(&ops[0])?, func(&ops[1])?);
            let (f_params, g_params) = (names.arity[f as usize], names.arity[g as usize]);
            if f_params != g_params {
                return Err(Diagnostic::at(
                    ins.mnemonic.pos,
                    format!(
                        "cannot patch {} ({f_params} parameters) with {} ({g_params} parameters)",
                        quote(ops[0].text),
                        quote(ops[1].text)
                    ),
                ));
            }
            Operands::TwoFuncs(f, g)
        }
    };
    Ok(instr
        .with_operands(operands)
        .expect("operands of the kind the instruction takes"))
}
