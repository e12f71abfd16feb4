//! Differential test against the real `git receive-pack` (DESIGN invariant
//! 8): for generated and mutated receive-pack command sections, the ref
//! updates Latchkey decides are exactly those git acts on, or Latchkey
//! refuses the body. The fuzz target `receive_pack_differential` runs the
//! same check on libFuzzer's inputs.

#![allow(clippy::unwrap_used)]

use latchkey_git::differential::{ByteChoices, ReceivePackOracle, Xorshift, generated_section};
use latchkey_git::pktline::pkt_line;

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";

/// Whether Latchkey accepts `body` as a push with at least one command (so
/// the comparison with git is about something).
fn decides_commands(body: &[u8]) -> bool {
    matches!(
        latchkey_git::parse_receive_pack_commands(body),
        Ok(latchkey_git::CommandsParse::Complete { ref updates, .. }) if !updates.is_empty()
    )
}

#[test]
fn latchkey_decides_exactly_what_git_receive_pack_acts_on() {
    let oracle = ReceivePackOracle::new().unwrap();
    // The oracle itself sees the bypass the fix closed: git acts on a
    // command behind a NUL that a plain reading would not see.
    let mut hidden = Vec::new();
    for l in [
        &b"push-cert\0report-status"[..],
        b"certificate version 0.1\n\0\n\n-----BEGIN PGP SIGNATURE-----\n",
        b"\n",
        format!("{A} {B} refs/heads/main\n").as_bytes(),
        b"-----BEGIN SSH SIGNATURE-----\n",
        b"c2lnbmF0dXJl\n",
        b"push-cert-end\n",
    ] {
        hidden.extend_from_slice(&pkt_line(l));
    }
    hidden.extend_from_slice(b"0000");
    let seen = oracle.commands(&hidden).unwrap().expect("git ran its hook");
    assert_eq!(seen, [(A.into(), B.into(), "refs/heads/main".into())]);

    let mut rng = Xorshift(0x1a7c_4b3e_9d01_2f55);
    let mut agreed_with_commands = 0;
    for case in 0..400 {
        let body = generated_section(&mut rng, 2);
        if let Err(diff) = oracle.check(&body) {
            panic!("case {case}: {diff}");
        }
        if decides_commands(&body) {
            agreed_with_commands += 1;
        }
    }
    // The generator must reach git with commands, not only refusals.
    assert!(agreed_with_commands > 100, "{agreed_with_commands}");
}

/// The fuzz target's corpus (`fuzz/corpus/receive_pack_differential`), replayed
/// against git on every test run.
#[test]
fn the_fuzz_corpus_agrees_with_git() {
    let oracle = ReceivePackOracle::new().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/receive_pack_differential");
    let mut replayed = 0;
    let mut with_commands = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        if let Err(diff) = oracle.check(&body) {
            panic!("{}: {diff}", path.display());
        }
        // The fuzz target also reads each input as the generator's choices.
        let generated = generated_section(&mut ByteChoices(&body), 4);
        if let Err(diff) = oracle.check(&generated) {
            panic!("{} (generated): {diff}", path.display());
        }
        if decides_commands(&body) {
            with_commands += 1;
        }
        replayed += 1;
    }
    eprintln!("replayed {replayed} corpus inputs against git, {with_commands} with commands");
    assert!(
        replayed >= 8,
        "the seed corpus is missing ({replayed} files)"
    );
    assert!(with_commands >= 5, "the corpus has too few accepted pushes");
}
