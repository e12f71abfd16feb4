//! Fuzzes the embedded document store's order-preserving value and path
//! encoding: decoding never panics, whatever decodes re-encodes to the
//! same bytes, and keys compare exactly as the values they encode.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_docstore::fuzzing::value_encoding(data));
