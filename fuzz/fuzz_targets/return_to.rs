//! Fuzzes the return-address check of sign-in and sign-out: whatever it
//! accepts must resolve, as a browser reads it, to an allowed origin.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_gateway::fuzzing::return_to(data));
