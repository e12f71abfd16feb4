//! Feeds arbitrary bytes to the pure JWT splitter/decoder: it must never
//! panic, and whatever it accepts must be within the size bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = latchkey_identity::parse_unverified(text) {
        assert!(text.len() <= latchkey_identity::MAX_TOKEN_BYTES);
        assert!(!jwt.alg.is_empty() || jwt.header.contains_key("alg"));
        let _ = jwt.issuer();
    }
});
