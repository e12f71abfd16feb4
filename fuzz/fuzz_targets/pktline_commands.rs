//! Fuzzes the pure Git parsers: pkt-lines, the receive-pack command
//! section, the upload-pack v2 command, the report-status tap and the route
//! parser.
#![no_main]

use latchkey_git::pktline::{PktParse, parse_pkt};
use latchkey_git::{CommandsParse, GitRoute, ReportStatusTap, parse_receive_pack_commands};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(PktParse::Complete { consumed, .. }) = parse_pkt(data) {
        assert!(consumed <= data.len().max(4));
    }
    match parse_receive_pack_commands(data) {
        Ok(CommandsParse::Complete {
            consumed, updates, ..
        }) => {
            assert!(consumed <= data.len());
            assert!(updates.iter().all(|u| u.name.starts_with("refs/")));
            // The section is self-delimiting: what follows never changes it.
            let again = parse_receive_pack_commands(&data[..consumed]);
            assert!(
                matches!(again, Ok(CommandsParse::Complete { consumed: c, .. }) if c == consumed)
            );
        }
        Ok(CommandsParse::Incomplete) => {
            for cut in [0, data.len() / 2] {
                assert!(matches!(
                    parse_receive_pack_commands(&data[..cut]),
                    Ok(CommandsParse::Incomplete) | Err(_)
                ));
            }
        }
        Err(_) => {}
    }
    for v2 in [false, true] {
        if let Ok(latchkey_git::upload::UploadParse::Complete { command, consumed }) =
            latchkey_git::upload::parse_upload_pack_command(data, v2)
        {
            assert!(consumed <= data.len());
            assert!(latchkey_git::upload::V2_COMMANDS.contains(&command.as_str()));
        }
    }
    for sideband in [false, true] {
        let mut whole = ReportStatusTap::new(sideband);
        whole.feed(data);
        let mut split = ReportStatusTap::new(sideband);
        let mid = data.len() / 3;
        split.feed(&data[..mid]);
        split.feed(&data[mid..]);
        assert_eq!(whole.report(), split.report());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let (path, query) = s.split_once('?').unwrap_or((s, ""));
        let _ = GitRoute::parse(path, Some(query));
    }
});
