//! Fuzzes Firestore field paths (`a.`b-c``) and resource names: whatever
//! parses must round-trip through its canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_documents::fuzzing::names(data));
