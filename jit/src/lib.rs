//! jitvm's native backends: the baseline JIT (dynasm, x86-64) and the optimizing JIT
//! (Cranelift), and the native calling convention they share.
//!
//! Not built yet: the engine refuses `--tier baseline` and `--tier opt` until these land.
//! They will compile `jitvm_vm::Definition`s, publish the code through `jitvm-runtime`
//! transactions, and fill each definition's `native_entry`.
