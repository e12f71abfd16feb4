//! Differential fuzzing against the real `git receive-pack` (DESIGN
//! invariant 8): for every input Latchkey accepts as a complete command
//! section, the ref updates it decides must be exactly those git's
//! pre-receive hook is given. Slow (a git process per accepted input), so
//! run it on its own: `scripts/fuzz receive_pack_differential 600`.
#![no_main]

use std::sync::OnceLock;

use latchkey_git::differential::ReceivePackOracle;
use libfuzzer_sys::fuzz_target;

static ORACLE: OnceLock<ReceivePackOracle> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let oracle = ORACLE.get_or_init(|| ReceivePackOracle::new().expect("a scratch git repository"));
    if let Err(difference) = oracle.check(data) {
        panic!("{difference}");
    }
});
