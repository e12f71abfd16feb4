//! Cheap stand-in for the fuzz targets on stable: their corpus seeds, plus
//! random mutations of each, run through the same property checks
//! (`latchkey_documents::fuzzing`) and must never panic.
#![allow(clippy::unwrap_used)]

use latchkey_documents::fuzzing;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.push(Vec::new());
    out
}

fn mutate_and_check(target: &str, check: fn(&[u8]), rounds: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
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
        b"/",
        b":",
        b"%2F",
        b"`",
        b"\\",
        b".",
        b"__",
        b"\x00",
        b"\xff",
        b"\x80\x80\x80\x80\x10",
    ];
    for seed in seeds(target) {
        check(&seed);
        for _ in 0..rounds {
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

#[test]
fn rest_corpus_and_mutations() {
    mutate_and_check("firestore_rest", fuzzing::rest, 2000);
}

#[test]
fn names_corpus_and_mutations() {
    mutate_and_check("firestore_field_path", fuzzing::names, 3000);
}

#[test]
fn grpc_corpus_and_mutations() {
    mutate_and_check("firestore_grpc", fuzzing::grpc, 2000);
}
