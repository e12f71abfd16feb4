//! Cheap stand-in for the fuzz target on stable: the fuzz corpus seeds plus
//! random mutations must never panic the parsers, and chunking must not
//! change what the report-status tap sees.
#![allow(clippy::unwrap_used)]

use latchkey_git::{CommandsParse, GitRoute, ReportStatusTap, parse_receive_pack_commands};

fn check(data: &[u8]) {
    if let Ok(CommandsParse::Complete { consumed, .. }) = parse_receive_pack_commands(data) {
        assert!(consumed <= data.len());
        let again = parse_receive_pack_commands(&data[..consumed]);
        assert!(
            matches!(again, Ok(CommandsParse::Complete { consumed: c, .. }) if c == consumed),
            "{data:?}"
        );
    }
    for sideband in [false, true] {
        let mut whole = ReportStatusTap::new(sideband);
        whole.feed(data);
        let mut split = ReportStatusTap::new(sideband);
        let mid = data.len() / 3;
        split.feed(&data[..mid]);
        split.feed(&data[mid..]);
        assert_eq!(whole.report(), split.report(), "{data:?}");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let (path, query) = s.split_once('?').unwrap_or((s, ""));
        let _ = GitRoute::parse(path, Some(query));
    }
}

#[test]
fn corpus_and_mutations_never_panic() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/pktline_commands");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    seeds.push(b"0000".to_vec());
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in &seeds {
        check(seed);
        for _ in 0..3000 {
            let mut d = seed.clone();
            for _ in 0..(rand() % 4 + 1) {
                if d.is_empty() {
                    break;
                }
                let i = (rand() as usize) % d.len();
                match rand() % 4 {
                    0 => d[i] = rand() as u8,
                    1 => d[i] = b"0123456789abcdef\0\n "[(rand() % 19) as usize],
                    2 => d.truncate(i),
                    _ => d.insert(i, rand() as u8),
                }
            }
            check(&d);
        }
    }
}
