//! Calls of a function to itself in tail position become a loop, behind the inlining guard.
//!
//! `call f; ret` in f's own body (Ackermann's and Takeuchi's functions) and `call f; add;
//! ret` (fib's `fib(n - 1) + fib(n - 2)`, the sum carried in an accumulator, as gcc's
//! tail-recursion pass does) jump back to the top of the body with the call's arguments as
//! the new parameters, instead of calling. It is the copy of [`crate::opt::inline`] taken
//! to the end: the callee's body is this body, so the copy is a jump back into it.
//!
//! What the interpreter would observe stays: each such call is still a call of definition
//! f at the next depth. So, in order, the loop's way in (1) tests the same guard as an
//! inlined site (f's slot runs f's definition) and makes the ordinary call when it does
//! not, so a `patch` of f is seen by the next call that starts after it; (2) traps with
//! `stack overflow` where that call's entry would (its depth is the caller's depth plus
//! one); (3) polls, as that call's entry would; (4) adds the value the call's result would
//! have been added to into the accumulator, which every `ret` adds to what it returns;
//! (5) sets the parameters to the arguments and every other local to 0, and jumps to the
//! top of the body. The call uses no native stack, so it needs no stack check.

use super::Translator;
use cranelift_codegen::ir::{condcodes::IntCC, types::I64, Block, InstBuilder, Value};
use cranelift_frontend::Variable;
use jitvm_vm::bytecode::{BinOp, Instr};
use jitvm_vm::{FuncId, Function, Trap};

/// The loop's head and the values it carries besides the locals.
pub(super) struct TailLoop {
    /// The top of the body, after the entry's checks.
    body: Block,
    /// What the calls turned into jumps have left to add to the final result.
    acc: Variable,
    /// The depth of the calls the current iteration makes.
    depth1: Variable,
}

/// What follows a call of `f` at `i` in f's body, when the call is in tail position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTail {
    /// `call f; ret`: the call's result is the result.
    Plain,
    /// `call f; add; ret`: the call's result plus the value under it is the result.
    Add,
}

/// Whether the instruction at `i` of `func` (definition `f`) is a call of `f` in tail
/// position.
pub fn self_tail(func: &Function, f: FuncId, i: usize) -> Option<SelfTail> {
    let code = &func.code;
    match (code.get(i), code.get(i + 1), code.get(i + 2)) {
        (Some(&Instr::Call(g)), Some(Instr::Ret), _) if g == f => Some(SelfTail::Plain),
        (Some(&Instr::Call(g)), Some(Instr::Bin(BinOp::Add)), Some(Instr::Ret)) if g == f => {
            Some(SelfTail::Add)
        }
        _ => None,
    }
}

impl Translator<'_> {
    /// Opens the loop at the top of the body, if any call of the function to itself is in
    /// tail position and its slot is known (it has one to guard).
    pub(super) fn begin_tail_loop(&mut self) {
        let func = self.func();
        let f = self.f;
        let has_tail_call = (0..func.code.len()).any(|i| self_tail(func, f, i).is_some());
        if !has_tail_call || self.env.slots.get(f as usize).is_none() {
            return;
        }
        let acc = self.b.declare_var(I64);
        let zero = self.iconst(0);
        self.b.def_var(acc, zero);
        let depth1 = self.b.declare_var(I64);
        self.b.def_var(depth1, self.depth1);
        let body = self.b.create_block();
        self.b.ins().jump(body, &[]);
        self.b.switch_to_block(body);
        self.tail_loop = Some(TailLoop { body, acc, depth1 });
    }

    /// Whether the call at `i` is one the loop takes.
    pub(super) fn is_loop_call(&self, i: usize) -> bool {
        self.tail_loop.is_some() && self_tail(self.func(), self.f, i).is_some()
    }

    /// The depth of the calls made from here.
    pub(super) fn callee_depth(&mut self) -> Value {
        match &self.tail_loop {
            Some(l) => self.b.use_var(l.depth1),
            None => self.depth1,
        }
    }

    /// Returns `v`, plus the accumulator.
    pub(super) fn ret(&mut self, v: Value) {
        let v = match &self.tail_loop {
            Some(l) => {
                let acc = self.b.use_var(l.acc);
                self.b.ins().iadd(v, acc)
            }
            None => v,
        };
        let zero = self.iconst(0);
        self.b.ins().return_(&[v, zero]);
    }

    /// The call of the function `f` to itself at `i`, in tail position: the steps of the
    /// module comment.
    pub(super) fn tail_call_itself(&mut self, i: usize, f: FuncId) {
        let kind = self_tail(self.func(), f, i).expect("a tail call");
        let p = self.func().params.len();
        let args: Vec<Value> = self.stack.drain(self.stack.len() - p..).collect();
        let addend = (kind == SelfTail::Add).then(|| self.pop());
        let depth1 = self.callee_depth();

        // 1. The guard; else the ordinary call, and its result (plus the addend) returned.
        let same = self.runs_definition(f);
        let looping = self.b.create_block();
        let out_of_line = self.b.create_block();
        self.b.set_cold_block(out_of_line);
        self.b.ins().brif(same, looping, &[], out_of_line, &[]);
        self.b.switch_to_block(out_of_line);
        let stub = self.callee(super::CALL_STUB, f, f);
        let mut call_args = vec![self.ctx, depth1];
        call_args.extend(&args);
        let (v, status) = self.call_pair(stub, &call_args);
        self.check_status(status);
        let v = match addend {
            Some(a) => self.b.ins().iadd(a, v),
            None => v,
        };
        self.ret(v);

        self.b.switch_to_block(looping);
        // 2. The call's entry check: its depth is `depth1`.
        let too_deep = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThan, depth1, self.max_depth);
        self.trap_if(too_deep, Trap::StackOverflow);
        // 3. Its entry poll.
        self.poll();
        let l = self.tail_loop.as_ref().expect("the loop is open");
        let (acc, depth_var, body) = (l.acc, l.depth1, l.body);
        // 4. The accumulator.
        if let Some(a) = addend {
            let old = self.b.use_var(acc);
            let new = self.b.ins().iadd(old, a);
            self.b.def_var(acc, new);
        }
        let next = self.b.ins().iadd_imm_s(depth1, 1);
        self.b.def_var(depth_var, next);
        // 5. The callee's locals, and back to the top.
        for k in 0..self.func().num_slots() as usize {
            let v = match args.get(k) {
                Some(&a) => a,
                None => self.iconst(0),
            };
            self.b.def_var(Variable::from_u32(k as u32), v);
        }
        self.b.ins().jump(body, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(src: &str, f: &str) -> Vec<(usize, SelfTail)> {
        let module = jitvm_vm::parse_module(src.as_bytes()).unwrap();
        let id = module.functions.iter().position(|g| g.name == f).unwrap();
        let func = &module.functions[id];
        (0..func.code.len())
            .filter_map(|i| self_tail(func, id as FuncId, i).map(|t| (i, t)))
            .collect()
    }

    #[test]
    fn a_call_to_itself_then_ret_or_add_ret_is_a_tail_call_and_nothing_else_is() {
        let src = "func f(n)\n load n\n jz done\n load n\n push 1\n sub\n call f\n ret\n\
                   done:\n load n\n push 1\n call f\n add\n ret\nend\n\
                   func g(n)\n load n\n call f\n ret\nend\n\
                   func h(n)\n load n\n call h\n push 1\n add\n ret\nend\n\
                   func main()\n push 0\n call f\n ret\nend\n";
        assert_eq!(shapes(src, "f"), [(5, SelfTail::Plain), (9, SelfTail::Add)]);
        assert_eq!(
            shapes(src, "g"),
            [],
            "a call of another function is no loop"
        );
        assert_eq!(shapes(src, "h"), [], "work after the call keeps it a call");
    }
}
