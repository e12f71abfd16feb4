//! The `firestore_rest_proto` fuzz target's check on stable: its corpus
//! seeds and random mutations of each must never break its properties.
#![allow(clippy::unwrap_used)]

use latchkey_documents::rest::proto_json::fuzz::check;

#[test]
fn rest_proto_corpus_and_mutations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/firestore_rest_proto");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 10, "the corpus is at {}", dir.display());
    seeds.push(Vec::new());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let interesting: &[&[u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"null",
        b"_",
        b"\"NaN\"",
        b"1e2",
        b"-",
        b"\"+/8=\"",
        b"\x00",
        b"\xff",
        b"\x80\x80\x80\x80\x10",
    ];
    for seed in seeds {
        check(&seed);
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
            check(&d);
        }
    }
}
