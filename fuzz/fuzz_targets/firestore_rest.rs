//! Fuzzes the Firestore REST front end: the first line is `METHOD
//! /v1/...?query` for `RestCall::parse`, the rest is the JSON body for
//! `classify_rest` and the response transaction tap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_documents::fuzzing::rest(data));
