//! What a generated module may contain: one profile per use of the generator. Each switch
//! only turns a feature on or off, and reads no input where it is off, so a profile makes
//! the same module from the same bytes as it did before a switch it leaves off existed:
//! [`Profile::FUZZ`] as the generator did before profiles existed, and
//! `crates/bcgen/tests/generator.rs` pins what the older profiles make.

/// The traps a module may hit on purpose (each then enabled for a third of the modules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traps {
    pub division_by_zero: bool,
    pub out_of_bounds: bool,
    /// `join` of a handle that is not one (needs [`Profile::threads`]).
    pub bad_handle: bool,
    pub failed_assert: bool,
    /// Recursion past the depth limit (needs [`Profile::recursion`]).
    pub stack_overflow: bool,
}

/// Which features the generator may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `spawn`/`join`, and `main`'s concurrent sections of workers.
    pub threads: bool,
    /// `patch F G`.
    pub patches: bool,
    /// `print` and `putc`; without them `main` returns what it computed instead of
    /// printing it.
    pub output: bool,
    /// Functions that call themselves (bounded: the depth argument is masked).
    pub recursion: bool,
    /// A low `--max-depth` in [`crate::Generated::run_args`] now and then.
    pub depth_limits: bool,
    /// `if` statements whose condition is a comparison right before its `jz`/`jnz`, the
    /// pair the lowering fuses.
    pub compare_branches: bool,
    /// Small callees, work for an inliner: leaf functions of a few instructions on their
    /// parameters (at most one compare-and-branch, one memory load and one call of another
    /// small callee), some of them *twins* with the body of a later one; loops that call
    /// one every trip, now and then patching it at one trip; patches between small callees
    /// of one shape; and, in `main`'s concurrent sections, patches of a function to its
    /// twin while the workers may be calling it.
    pub small_callees: bool,
    pub traps: Traps,
    /// Functions besides `main`: at most this many.
    pub max_functions: usize,
    /// Estimated instructions one run of `main` may execute.
    pub main_cost_limit: u64,
}

const ALL_TRAPS: Traps = Traps {
    division_by_zero: true,
    out_of_bounds: true,
    bad_handle: true,
    failed_assert: true,
    stack_overflow: true,
};

impl Profile {
    /// Everything but small callees: the CLI's differential runs and fuzzing
    /// ([`crate::generate`]).
    pub const FUZZ: Profile = Profile {
        threads: true,
        patches: true,
        output: true,
        recursion: true,
        depth_limits: true,
        compare_branches: false,
        small_callees: false,
        traps: ALL_TRAPS,
        max_functions: 6,
        main_cost_limit: 300_000,
    };

    /// The lowering against the reference evaluator (`vm/tests/differential.rs`): one
    /// thread, no output (the result and memory are compared), no depth limit to meet, and
    /// fused compare-branches; smaller, as it runs thousands of modules unoptimised.
    pub const LOWERING: Profile = Profile {
        threads: false,
        patches: false,
        output: false,
        recursion: true,
        depth_limits: false,
        compare_branches: true,
        small_callees: false,
        traps: Traps {
            division_by_zero: true,
            out_of_bounds: true,
            failed_assert: true,
            ..Traps::NONE
        },
        max_functions: 4,
        main_cost_limit: 30_000,
    };

    /// Native code against the test machine's evaluator (`jit/tests/random_programs.rs`):
    /// one thread and no patches (the machine runs `main` on the test's thread), and no
    /// depth limit, which the evaluator, recursing on the native stack, meets elsewhere.
    pub const NATIVE: Profile = Profile {
        threads: false,
        patches: false,
        output: true,
        recursion: true,
        depth_limits: false,
        compare_branches: false,
        small_callees: false,
        traps: Traps {
            division_by_zero: true,
            out_of_bounds: true,
            failed_assert: true,
            ..Traps::NONE
        },
        max_functions: 5,
        main_cost_limit: 100_000,
    };

    /// For an optimizing tier that inlines (`tests/differential_inlining.rs`): everything
    /// [`Profile::FUZZ`] has, plus [`Profile::small_callees`]: small functions called from
    /// loops and from other functions (inlining candidates, nested ones included), patched
    /// to each other between calls, mid-loop and while workers run, so a guarded inlined
    /// site must notice each `patch` (spec §5). At least two functions besides `main`.
    pub const INLINING: Profile = Profile {
        small_callees: true,
        max_functions: 8,
        main_cost_limit: 100_000,
        ..Profile::FUZZ
    };
}

impl Traps {
    pub const NONE: Traps = Traps {
        division_by_zero: false,
        out_of_bounds: false,
        bad_handle: false,
        failed_assert: false,
        stack_overflow: false,
    };
}
