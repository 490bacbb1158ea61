//! Guarded inlining: small callees' bodies copied into their callers by Cranelift's inliner
//! (`Context::inline` with an [`Inline`] of ours), each copy behind a guard that keeps
//! `patch` Strong.
//!
//! ## The guarded site
//!
//! A call to `g` that the policy ([`Inliner::site`]) picks is translated as
//!
//! ```text
//!     entry  = atomic_load [slot(g)]          ; g's dispatch slot, as a call would load it
//!     header = load [entry - 8]               ; the entry's header word: def_addr | kind
//!     brif (header | 1) == (def(g) | 1), inlined, out_of_line
//! inlined:                                    ; g's body, copied here by the inliner
//!     v, status = call u1:SITE(ctx, depth + 1, args..)
//! out_of_line:                                ; cold: the ordinary call, via g's call stub
//!     v, status = call u0:g(ctx, depth + 1, args..)
//! ```
//!
//! The guard compares the *definition* the slot runs, not its code address: a tier-up of
//! `g` (interpreter stub, baseline, optimized code: all headed `def(g) | kind`) keeps the
//! guard passing, while `patch g h` (the slot now holds an entry headed `def(h)`) fails it, so
//! the site makes the ordinary call and runs what the slot holds. Why that keeps spec §5's
//! guarantee is argued in `docs/native-code.md`, "Inlined calls and `patch`".
//!
//! ## The copies
//!
//! `u1:SITE` names a site the policy handed out: which function, reached through which
//! chain of inlined callers. The driver ([`inline_sites`]) finds such a call, has the body
//! for that place translated (by `translate::translate_inlined`: no stack check and no entry
//! poll, which the caller's frame and entry already did; the depth check stays, as the
//! interpreter's rule), and has Cranelift inline exactly that call. The copy's own
//! calls may be guarded sites again, within the limits below, so a recursion is unrolled a
//! bounded number of levels. Inlined instructions carry the source location of the call they
//! replace, so debuggers and profilers see the caller's line.

use super::{OptEnv, OptError};
use cranelift_codegen::inline::{Inline, InlineCommand};
use cranelift_codegen::ir::{
    self, ExternalName, FuncRef, Function, Inst, InstructionData, Opcode, UserExternalName,
};
use cranelift_codegen::Context;
use jitvm_vm::{FuncId, Module};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// The external-name namespace of ordinary calls: `u0:F` is F's call stub.
pub const CALL_STUB: u32 = 0;
/// The namespace of calls the inliner replaces: `u1:SITE`, an index into the sites.
pub const INLINE_SITE: u32 = 1;

/// A callee is small when its body has at most this many bytecode instructions.
pub const MAX_CALLEE_INSTRS: usize = 40;
/// Copies nest at most this deep (a callee inlined into a callee inlined into ..).
pub const MAX_NESTING: usize = 6;
/// A function appears at most this many times on a chain of inlined copies: a recursive
/// function is unrolled this many levels into itself.
pub const MAX_RECURSION_COPIES: usize = 4;
/// Bytecode instructions all copies in one compiled function add up to, at most.
pub const MAX_INLINED_INSTRS: usize = 480;

/// What inlining did in one compile, for `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineReport {
    /// Guarded sites whose callee was copied in.
    pub sites: usize,
    /// Bytecode instructions those copies translate.
    pub instrs: usize,
    /// Time spent translating the copies and inlining them.
    pub took: Duration,
}

/// One guarded site: the callee, and the chain of functions its copy sits in (outermost
/// first, ending with the callee).
struct Site {
    callee: FuncId,
    chain: Vec<FuncId>,
}

/// The inlining policy of one compile and the sites it has handed out.
pub struct Inliner<'a> {
    module: &'a Module,
    env: &'a OptEnv,
    budget: Cell<usize>,
    sites: RefCell<Vec<Site>>,
}

impl<'a> Inliner<'a> {
    pub fn new(module: &'a Module, env: &'a OptEnv) -> Self {
        Inliner {
            module,
            env,
            budget: Cell::new(if env.inline { MAX_INLINED_INSTRS } else { 0 }),
            sites: RefCell::new(Vec::new()),
        }
    }

    /// Whether the call to `g` from the copy (or function) at the end of `chain` becomes a
    /// guarded site, and its number if so. Each site taken spends g's size from the budget.
    pub fn site(&self, chain: &[FuncId], g: FuncId) -> Option<u32> {
        let callee = &self.module.functions[g as usize];
        let size = callee.code.len();
        let copies = chain.iter().filter(|&&f| f == g).count();
        if chain.len() > MAX_NESTING
            || size > MAX_CALLEE_INSTRS
            || copies >= MAX_RECURSION_COPIES
            || size > self.budget.get()
            || self.env.slots.get(g as usize).is_none()
        {
            return None;
        }
        self.budget.set(self.budget.get() - size);
        let mut sites = self.sites.borrow_mut();
        let mut chain = chain.to_vec();
        chain.push(g);
        sites.push(Site { callee: g, chain });
        Some(sites.len() as u32 - 1)
    }

    /// The dispatch slot's address and the definition's header word (kind bit clear) the
    /// guard of a site calling `g` compares.
    pub fn guard_of(&self, g: FuncId) -> (usize, usize) {
        (self.env.slots[g as usize], self.env.defs[g as usize])
    }

    /// The callee of `site` and the chain its copy sits in (ending with the callee).
    fn site_callee(&self, site: u32) -> (FuncId, Vec<FuncId>) {
        let sites = self.sites.borrow();
        let s = &sites[site as usize];
        (s.callee, s.chain.clone())
    }
}

/// Inlines every guarded site of `ctx.func`, copies' own sites included, and reports what
/// that did. `body(g, chain)` translates g's body as the copy at the end of `chain`.
pub fn inline_sites(
    ctx: &mut Context,
    inliner: &Inliner,
    body: impl Fn(FuncId, &[FuncId]) -> Function,
) -> Result<InlineReport, OptError> {
    let start = Instant::now();
    let mut report = InlineReport::default();
    while let Some((call, site)) = first_site(&ctx.func) {
        let (g, chain) = inliner.site_callee(site);
        let callee = body(g, &chain);
        let loc = ctx.func.srcloc(call);
        let first_new = ctx.func.dfg.num_insts();
        let inlined = ctx
            .inline(OneCall { call, callee })
            .map_err(OptError::Codegen)?;
        if !inlined {
            return Err(OptError::Inline("Cranelift kept a guarded call"));
        }
        for i in first_new..ctx.func.dfg.num_insts() {
            let inst = Inst::from_u32(i as u32);
            if ctx.func.srcloc(inst).is_default() {
                ctx.func.set_srcloc(inst, loc);
            }
        }
        report.sites += 1;
        report.instrs += inliner.module.functions[g as usize].code.len();
    }
    report.took = start.elapsed();
    Ok(report)
}

/// The first call in layout order to a guarded site's copy, and the site.
fn first_site(func: &Function) -> Option<(Inst, u32)> {
    func.layout.blocks().find_map(|block| {
        func.layout.block_insts(block).find_map(|inst| {
            let InstructionData::Call { func_ref, .. } = func.dfg.insts[inst] else {
                return None;
            };
            let name = user_name(func, func_ref)?;
            (name.namespace == INLINE_SITE).then_some((inst, name.index))
        })
    })
}

/// The user name a call's `FuncRef` refers to.
pub fn user_name(func: &Function, callee: FuncRef) -> Option<&UserExternalName> {
    match func.dfg.ext_funcs[callee].name {
        ExternalName::User(r) => Some(&func.params.user_named_funcs()[r]),
        _ => None,
    }
}

/// Inlines one call, `call`, with `callee` as its body; keeps every other call.
struct OneCall {
    call: Inst,
    callee: Function,
}

impl Inline for OneCall {
    fn inline(
        &mut self,
        _caller: &ir::Function,
        inst: Inst,
        _opcode: Opcode,
        _callee: FuncRef,
        _args: &[ir::Value],
    ) -> InlineCommand<'_> {
        if inst == self.call {
            InlineCommand::Inline {
                callee: Cow::Borrowed(&self.callee),
                visit_callee: false,
            }
        } else {
            InlineCommand::KeepCall
        }
    }
}
