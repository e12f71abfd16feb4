//! Fuzzes the web-app path reading: arbitrary bytes as a request path for
//! `canonical_path` and, when canonical, `repository` (Gogs/Gitea pages).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_gateway::fuzzing::app_path(data));
