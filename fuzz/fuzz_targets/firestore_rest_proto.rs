//! Fuzzes the REST ⇄ protobuf mapping of the embedded document store: the
//! first line is `METHOD /v1/...?query`, the rest the JSON body, read by
//! `request_to_proto`; whatever it maps must classify over gRPC as the
//! REST call classifies. The whole input is also decoded as every RPC's
//! protobuf answer and rendered as REST JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_documents::rest::proto_json::fuzz::check(data));
