//! Differential fuzzing against the real `git receive-pack` (DESIGN
//! invariant 8): for every input Latchkey accepts as a complete command
//! section, the ref updates it decides must be exactly those git's
//! pre-receive hook is given. Each input is tried twice: as raw bytes, and
//! as the choices of the structured generator (plausible pushes, signed and
//! unsigned, with the mutations that made readers disagree before), so most
//! structured inputs get as far as git. Slow (a git process per accepted
//! input): `scripts/fuzz receive_pack_differential 600`.
#![no_main]

use std::sync::OnceLock;

use latchkey_git::differential::{ByteChoices, ReceivePackOracle, generated_section};
use libfuzzer_sys::fuzz_target;

static ORACLE: OnceLock<ReceivePackOracle> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let oracle = ORACLE.get_or_init(|| ReceivePackOracle::new().expect("a scratch git repository"));
    if let Err(difference) = oracle.check(data) {
        panic!("raw input: {difference}");
    }
    let generated = generated_section(&mut ByteChoices(data), 4);
    if let Err(difference) = oracle.check(&generated) {
        panic!("generated input: {difference}");
    }
});
