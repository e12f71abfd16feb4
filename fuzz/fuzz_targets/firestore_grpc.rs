//! Fuzzes the Firestore gRPC front end: the first byte picks the RPC, the
//! second where to split the stream; the rest goes through `FrameDecoder`
//! and `classify_grpc` (and, whole, as one unframed message).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_documents::fuzzing::grpc(data));
