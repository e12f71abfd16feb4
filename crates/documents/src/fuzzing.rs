//! Property checks shared by the cargo-fuzz targets (`fuzz/fuzz_targets/
//! firestore_*.rs`) and the stable test that replays their corpora. Each
//! takes arbitrary bytes and panics only if an invariant breaks.

use crate::classify::{Classified, ClassifyOptions, StreamClassifier, Target, classify_grpc};
use crate::grpc::{FrameDecoder, Method, encode_frame};
use crate::names::{DatabaseName, DocPath, FieldPath, ResourceName};
use crate::rest::{RestCall, RestTransactionTap, classify_rest};

fn record_all(_: &DocPath) -> bool {
    true
}

const RECORD: ClassifyOptions<'static> = ClassifyOptions {
    record_values: &record_all,
};

/// What every classification must satisfy.
fn check_classified(c: &Classified) {
    for a in &c.accesses {
        match &a.target {
            Target::Document(p) => assert!(p.is_document(), "{p}"),
            Target::Collection(p) => assert!(p.is_collection(), "{p}"),
            Target::Subtree {
                parent,
                collection_id,
            } => {
                assert!(!parent.is_collection(), "{parent}");
                assert!(!collection_id.is_empty() && !collection_id.contains('/'));
            }
            Target::AnyCollection { parent, .. } | Target::CollectionIds { parent } => {
                assert!(!parent.is_collection(), "{parent}");
            }
        }
        if let Target::Document(p) | Target::Collection(p) = &a.target {
            assert_eq!(DocPath::parse(&p.to_string()).as_ref(), Ok(p));
        }
        let intent = a.intent(&c.database, "env");
        if intent.resource.id != "env" {
            assert!(
                intent
                    .resource
                    .id
                    .starts_with(&format!("{}/", c.database.database))
            );
        }
    }
}

/// `firestore_rest`: the first line is `METHOD /path?query`, the rest the body.
pub fn rest(data: &[u8]) {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    if let Ok(head) = std::str::from_utf8(head) {
        let (method, target) = head.split_once(' ').unwrap_or(("POST", head));
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        if let Ok(method) = http::Method::from_bytes(method.as_bytes())
            && let Ok(call) = RestCall::parse(&method, path, query)
        {
            match call.method {
                Method::GetDocument | Method::UpdateDocument | Method::DeleteDocument => {
                    assert!(call.path.is_document());
                }
                Method::ListDocuments | Method::CreateDocument => {
                    assert!(call.path.is_collection());
                }
                _ => assert!(!call.path.is_collection()),
            }
            for opts in [&ClassifyOptions::NONE, &RECORD] {
                if let Ok(c) = classify_rest(&call, body, opts) {
                    assert_eq!(c.database, call.database);
                    check_classified(&c);
                }
            }
        }
    }
    // Chunking never changes what the response tap finds.
    let mut whole = RestTransactionTap::new();
    whole.feed(body);
    let mut parts = RestTransactionTap::new();
    let mid = body.len() / 2;
    parts.feed(&body[..mid]);
    parts.feed(&body[mid..]);
    assert_eq!(whole.transaction(), parts.transaction());
}

/// `firestore_field_path`: field paths and resource names round-trip
/// through their canonical forms.
pub fn names(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        assert!(ResourceName::parse_bytes(data).is_err());
        return;
    };
    if let Ok(fp) = FieldPath::parse(s) {
        let canonical = fp.to_string();
        let again = FieldPath::parse(&canonical).unwrap_or_else(|e| panic!("{canonical}: {e}"));
        assert_eq!(again, fp);
        assert_eq!(again.to_string(), canonical);
        assert_eq!(
            FieldPath::from_segments(fp.segments().to_vec()).ok(),
            Some(fp)
        );
    }
    // Each line as one segment of a field path.
    let segs: Vec<String> = s.lines().map(str::to_owned).collect();
    if let Ok(fp) = FieldPath::from_segments(segs) {
        assert_eq!(FieldPath::parse(&fp.to_string()).ok(), Some(fp));
    }
    if let Ok((db, path)) = ResourceName::parse(s) {
        assert_eq!(db.resource_name(&path), s);
        assert_eq!(DatabaseName::parse(&db.to_string()).ok(), Some(db.clone()));
        let r = path.to_resource(&db.database, "env");
        let mut depth = 0;
        let mut cur = Some(&r);
        while let Some(x) = cur {
            depth += 1;
            cur = x.parent.as_deref();
        }
        assert_eq!(depth, path.segments().len() + 1);
    }
    if let Ok(p) = DocPath::parse(s) {
        assert_eq!(p.to_string(), s);
    }
}

/// `firestore_grpc`: the first byte picks the method, the second a split
/// point; the rest is a framed request stream.
pub fn grpc(data: &[u8]) {
    let [m, cut, rest @ ..] = data else {
        return;
    };
    let method = Method::ALL[usize::from(*m) % Method::ALL.len()];
    // The bytes as one unframed message.
    if let Ok(c) = classify_grpc(method, rest, &RECORD) {
        check_classified(&c);
    }
    let _ = crate::classify::transaction_in_response(method, rest);
    // The bytes as a frame stream, split anywhere.
    let cut = usize::from(*cut).min(rest.len());
    let mut dec = FrameDecoder::new(1 << 16);
    let mut stream = StreamClassifier::new(method);
    for part in [&rest[..cut], &rest[cut..]] {
        dec.push(part);
        while let Ok(Some(msg)) = dec.next_message() {
            if let Ok(c) = stream.classify(&msg, &ClassifyOptions::NONE) {
                check_classified(&c);
                assert_eq!(Some(&c.database), stream.database());
            }
        }
    }
    // Framing round-trips.
    let mut again = FrameDecoder::new(rest.len());
    again.push(&encode_frame(rest));
    assert_eq!(again.next_message().ok().flatten().as_deref(), Some(rest));
    assert!(again.is_empty());
}
