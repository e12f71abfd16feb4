//! Differential test against the real `git receive-pack` (DESIGN invariant
//! 8): for generated and mutated receive-pack command sections, the ref
//! updates Latchkey decides are exactly those git acts on, or Latchkey
//! refuses the body. The fuzz target `receive_pack_differential` runs the
//! same check on libFuzzer's inputs.

#![allow(clippy::unwrap_used)]

use latchkey_git::differential::ReceivePackOracle;
use latchkey_git::pktline::pkt_line;

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";
const Z: &str = "0000000000000000000000000000000000000000";

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn command(rng: &mut Rng) -> String {
    let ids = [A, B, Z];
    let names = [
        "refs/heads/main",
        "refs/heads/x",
        "refs/tags/v1",
        "refs/notes/n",
    ];
    format!("{} {} {}", rng.pick(&ids), rng.pick(&ids), rng.pick(&names))
}

/// The lines (pkt-line payloads; `None` is a flush-pkt) of a plausible
/// command section: shallow lines, unsigned commands or a push certificate,
/// push options.
fn section(rng: &mut Rng) -> Vec<Option<Vec<u8>>> {
    let mut lines: Vec<Option<Vec<u8>>> = Vec::new();
    let caps = *rng.pick(&[
        "report-status",
        "report-status-v2 side-band-64k push-options",
        "report-status atomic",
        "",
    ]);
    for _ in 0..rng.below(2) {
        lines.push(Some(format!("shallow {A}").into_bytes()));
    }
    if rng.below(2) == 0 {
        for i in 0..1 + rng.below(3) {
            let mut l = command(rng).into_bytes();
            if i == 0 {
                l.push(0);
                l.extend_from_slice(caps.as_bytes());
            }
            if rng.below(2) == 0 {
                l.push(b'\n');
            }
            lines.push(Some(l));
        }
    } else {
        let mut first = b"push-cert\0".to_vec();
        first.extend_from_slice(caps.as_bytes());
        lines.push(Some(first));
        for h in [
            "certificate version 0.1\n",
            "pusher T <t@example.com> 1700000000 +0000\n",
            "pushee http://example.com/acme/app.git\n",
            "nonce 1700000000-abc\n",
            "\n",
        ] {
            lines.push(Some(h.as_bytes().to_vec()));
        }
        for _ in 0..1 + rng.below(3) {
            lines.push(Some(format!("{}\n", command(rng)).into_bytes()));
        }
        let armor = *rng.pick(&[
            "-----BEGIN PGP SIGNATURE-----\n",
            "-----BEGIN SSH SIGNATURE-----\n",
            "-----BEGIN SIGNED MESSAGE-----\n",
        ]);
        lines.push(Some(armor.as_bytes().to_vec()));
        lines.push(Some(b"c2lnbmF0dXJl\n".to_vec()));
        lines.push(Some(b"-----END PGP SIGNATURE-----\n".to_vec()));
        lines.push(Some(b"push-cert-end\n".to_vec()));
    }
    lines.push(None);
    if caps.contains("push-options") {
        lines.push(Some(b"ci.skip".to_vec()));
        lines.push(None);
    }
    lines
}

/// One mutation of the kinds that made parsers disagree before: a NUL or a
/// newline inside a line, a duplicated (armor) line, a dropped or moved line,
/// a line split in two.
fn mutate(rng: &mut Rng, lines: &mut Vec<Option<Vec<u8>>>) {
    let i = rng.below(lines.len());
    match rng.below(7) {
        0 | 1 => {
            if let Some(Some(l)) = lines.get_mut(i) {
                let at = rng.below(l.len() + 1);
                l.insert(at, *rng.pick(&[0u8, b'\n', b' ']));
            }
        }
        2 => {
            let dup = lines[i].clone();
            let at = rng.below(lines.len());
            lines.insert(at, dup);
        }
        3 => {
            if lines.len() > 1 {
                lines.remove(i);
            }
        }
        4 => {
            let extra = rng
                .pick(&[
                    &b"-----BEGIN PGP SIGNATURE-----\n"[..],
                    b"push-cert-end\n",
                    b"\n",
                    b"push-cert",
                ])
                .to_vec();
            lines.insert(i, Some(extra));
        }
        5 => {
            if let Some(Some(l)) = lines.get(i).cloned()
                && l.len() > 1
            {
                let at = 1 + rng.below(l.len() - 1);
                lines[i] = Some(l[..at].to_vec());
                lines.insert(i + 1, Some(l[at..].to_vec()));
            }
        }
        _ => {
            let l = format!("{}\n", command(rng)).into_bytes();
            lines.insert(i, Some(l));
        }
    }
}

fn encode(lines: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        match l {
            None => out.extend_from_slice(b"0000"),
            Some(l) if l.is_empty() => out.extend_from_slice(b"0004"),
            Some(l) => out.extend_from_slice(&pkt_line(l)),
        }
    }
    out
}

#[test]
fn latchkey_decides_exactly_what_git_receive_pack_acts_on() {
    let oracle = ReceivePackOracle::new().unwrap();
    // The oracle itself sees the bypass the fix closed: git acts on a
    // command behind a NUL that a plain reading would not see.
    let hidden = encode(&[
        Some(b"push-cert\0report-status".to_vec()),
        Some(b"certificate version 0.1\n\0\n\n-----BEGIN PGP SIGNATURE-----\n".to_vec()),
        Some(b"\n".to_vec()),
        Some(format!("{A} {B} refs/heads/main\n").into_bytes()),
        Some(b"-----BEGIN SSH SIGNATURE-----\n".to_vec()),
        Some(b"c2lnbmF0dXJl\n".to_vec()),
        Some(b"push-cert-end\n".to_vec()),
        None,
    ]);
    let seen = oracle.commands(&hidden).unwrap().expect("git ran its hook");
    assert_eq!(seen, [(A.into(), B.into(), "refs/heads/main".into())]);

    let mut rng = Rng(0x1a7c_4b3e_9d01_2f55);
    let mut agreed_with_commands = 0;
    for case in 0..400 {
        let mut lines = section(&mut rng);
        for _ in 0..rng.below(3) {
            mutate(&mut rng, &mut lines);
        }
        let body = encode(&lines);
        if let Err(diff) = oracle.check(&body) {
            panic!("case {case}: {diff}");
        }
        if matches!(
            latchkey_git::parse_receive_pack_commands(&body),
            Ok(latchkey_git::CommandsParse::Complete { ref updates, .. }) if !updates.is_empty()
        ) {
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
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        if let Err(diff) = oracle.check(&body) {
            panic!("{}: {diff}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= 8,
        "the seed corpus is missing ({replayed} files)"
    );
}
