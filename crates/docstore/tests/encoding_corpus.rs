//! Cheap stand-in for the `docstore_value_encoding` fuzz target on stable:
//! its corpus seeds, plus random mutations of each, run through the same
//! property check (`latchkey_docstore::fuzzing`), which must never panic.
#![allow(clippy::unwrap_used)]

use latchkey_docstore::fuzzing;

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/docstore_value_encoding");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        out.len() >= 10,
        "the seed corpus is missing from {}",
        dir.display()
    );
    out.push(Vec::new());
    out
}

#[test]
fn value_encoding_corpus_and_mutations() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Bytes that matter to the layout: ends, escapes, entry marks, tags.
    let interesting: &[&[u8]] = &[
        b"\x00",
        b"\x00\x01",
        b"\x00\xff",
        b"\x01",
        b"\x80",
        b"\x90\x01",
        b"\x24\x04\x4c",
        b"\x23",
        b"\xff",
    ];
    for seed in seeds() {
        fuzzing::value_encoding(&seed);
        for _ in 0..3000 {
            let mut d = seed.clone();
            for _ in 0..(rand() % 4 + 1) {
                let i = if d.is_empty() {
                    0
                } else {
                    (rand() as usize) % d.len()
                };
                match rand() % 4 {
                    0 if !d.is_empty() => d[i] = rand() as u8,
                    1 if !d.is_empty() => {
                        d.remove(i);
                    }
                    2 => {
                        let s = interesting[(rand() as usize) % interesting.len()];
                        d.splice(i..i, s.iter().copied());
                    }
                    _ => {
                        let end = (i + (rand() as usize % 8)).min(d.len());
                        let dup = d[i..end].to_vec();
                        d.splice(i..i, dup);
                    }
                }
            }
            fuzzing::value_encoding(&d);
        }
    }
}
