//! Native code and the runtime's reclamation, through the real engine: a thread that stays
//! in one long native loop must not hold back the freeing of code other threads replace.

use jitvm::{instantiate, Tier};
use jitvm_runtime::Guarantee;
use jitvm_vm::{parse_module, RunConfig};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `main` spins in native code until cell 0 is set, then returns 7.
const SPINNER: &str = "
memory 1
func main()
loop:
  push 0
  mload
  jz loop
  push 7
  ret
end
";

#[test]
fn a_native_loop_that_runs_while_code_is_replaced_does_not_hold_reclamation_back() {
    let module = parse_module(SPINNER.as_bytes()).unwrap();
    let tiers = vec![Tier::Baseline; module.functions.len()];
    let program = instantiate(module, &tiers, RunConfig::default()).unwrap();
    let runtime = program.runtime().clone();
    let spinner = {
        let program = program.clone();
        std::thread::spawn(move || program.run_main(0))
    };

    // Replace one blob with another, thousands of times, while main spins natively. After
    // every batch, everything retired so far must be freed while main is still spinning: a
    // thread inside one long native call that held reclamation back would time this out.
    let me = runtime.register_thread().unwrap();
    let slot = runtime.dispatch_slot(0);
    let mut previous = None;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 500;
    const BLOB: usize = 208; // 200 bytes, rounded to the allocator's 16-byte granule
    for _ in 0..BATCHES {
        for _ in 0..PER_BATCH {
            let mut tx = runtime.transaction();
            let blob = tx.stage(&[0xC3; 200], 16).unwrap(); // `ret`s
            tx.set_dispatch(&slot, blob.addr()).unwrap();
            if let Some(old) = previous.replace(blob) {
                tx.retire(old).unwrap();
            }
            tx.commit(Guarantee::Strong).unwrap();
            me.quiescent(); // this thread holds no code address
        }
        runtime
            .synchronize(Duration::from_secs(60))
            .expect("the native loop lets reclamation finish");
        assert!(!spinner.is_finished(), "main must still be spinning");
        assert_eq!(runtime.stats().bytes_retired, 0);
    }
    // So retired code never piled up past one batch: all of it would be about 1 MB.
    let high_water = runtime.stats().high_water;
    assert!(
        high_water < 2 * PER_BATCH * BLOB,
        "code memory high-water {high_water} bytes"
    );

    program.memory()[0].store(1, Ordering::Release);
    assert_eq!(spinner.join().unwrap(), 7);
}
