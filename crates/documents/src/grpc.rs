//! The gRPC side of Firestore: which RPC a request path names, and the
//! length-prefixed framing of gRPC message streams.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One RPC of the `google.firestore.v1.Firestore` service.
///
/// `ExecutePipeline` is deliberately missing: a pipeline can read any
/// collection through stages that cannot be classified per collection, so
/// [`Method::from_grpc_path`] does not recognise it and it is refused as an
/// unknown method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read one document.
    GetDocument,
    /// List a collection's documents.
    ListDocuments,
    /// Update (or upsert) one document.
    UpdateDocument,
    /// Delete one document.
    DeleteDocument,
    /// Read several documents (server streaming).
    BatchGetDocuments,
    /// Start a transaction.
    BeginTransaction,
    /// Apply writes, atomically.
    Commit,
    /// Abandon a transaction.
    Rollback,
    /// Run a query (server streaming).
    RunQuery,
    /// Run an aggregation such as a count (server streaming).
    RunAggregationQuery,
    /// Split a query into parallel parts.
    PartitionQuery,
    /// Stream writes (bidirectional).
    Write,
    /// Watch documents or queries (bidirectional).
    Listen,
    /// List the collection ids under a document or the root.
    ListCollectionIds,
    /// Apply writes, each on its own.
    BatchWrite,
    /// Create one document.
    CreateDocument,
}

const SERVICE_PREFIX: &str = "/google.firestore.v1.Firestore/";

impl Method {
    /// Every method, in the order the service declares them.
    pub const ALL: [Method; 16] = [
        Self::GetDocument,
        Self::ListDocuments,
        Self::UpdateDocument,
        Self::DeleteDocument,
        Self::BatchGetDocuments,
        Self::BeginTransaction,
        Self::Commit,
        Self::Rollback,
        Self::RunQuery,
        Self::RunAggregationQuery,
        Self::PartitionQuery,
        Self::Write,
        Self::Listen,
        Self::ListCollectionIds,
        Self::BatchWrite,
        Self::CreateDocument,
    ];

    /// The method for a gRPC request path such as
    /// `/google.firestore.v1.Firestore/Commit`.
    pub fn from_grpc_path(path: &str) -> Option<Method> {
        let name = path.strip_prefix(SERVICE_PREFIX)?;
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The RPC name, e.g. `Commit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetDocument => "GetDocument",
            Self::ListDocuments => "ListDocuments",
            Self::UpdateDocument => "UpdateDocument",
            Self::DeleteDocument => "DeleteDocument",
            Self::BatchGetDocuments => "BatchGetDocuments",
            Self::BeginTransaction => "BeginTransaction",
            Self::Commit => "Commit",
            Self::Rollback => "Rollback",
            Self::RunQuery => "RunQuery",
            Self::RunAggregationQuery => "RunAggregationQuery",
            Self::PartitionQuery => "PartitionQuery",
            Self::Write => "Write",
            Self::Listen => "Listen",
            Self::ListCollectionIds => "ListCollectionIds",
            Self::BatchWrite => "BatchWrite",
            Self::CreateDocument => "CreateDocument",
        }
    }

    /// The gRPC request path, e.g. `/google.firestore.v1.Firestore/Commit`.
    pub fn grpc_path(self) -> String {
        format!("{SERVICE_PREFIX}{}", self.as_str())
    }

    /// Whether the call only reads documents and changes nothing in the
    /// database (a read may still begin a read-only transaction). Reads may
    /// overlap their audit sync with the upstream call; writes may not.
    pub fn reads_only(self) -> bool {
        matches!(
            self,
            Self::GetDocument
                | Self::ListDocuments
                | Self::BatchGetDocuments
                | Self::RunQuery
                | Self::RunAggregationQuery
                | Self::PartitionQuery
                | Self::Listen
                | Self::ListCollectionIds
        )
    }

    /// Whether the client sends a stream of messages (`Write`, `Listen`).
    pub fn client_streaming(self) -> bool {
        matches!(self, Self::Write | Self::Listen)
    }

    /// Whether the server answers with a stream of messages.
    pub fn server_streaming(self) -> bool {
        matches!(
            self,
            Self::BatchGetDocuments
                | Self::RunQuery
                | Self::RunAggregationQuery
                | Self::Write
                | Self::Listen
        )
    }

    /// Whether the method may change documents.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::UpdateDocument
                | Self::DeleteDocument
                | Self::Commit
                | Self::Write
                | Self::BatchWrite
                | Self::CreateDocument
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a gRPC message stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compressed flag is set; Latchkey must read each message to
    /// classify it and does not decompress.
    #[error("compressed request messages are not supported")]
    Compressed,
    /// The flag byte is neither 0 nor 1.
    #[error("invalid gRPC frame flag {0}")]
    BadFlag(u8),
    /// A message is longer than the configured limit.
    #[error("a gRPC message of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the gRPC stream ended inside a message")]
    Truncated,
}

/// Length of the gRPC frame header: a flag byte and a big-endian `u32`.
pub const FRAME_HEADER_LEN: usize = 5;

/// Splits a gRPC byte stream into messages. Feed it bytes as they arrive
/// ([`FrameDecoder::push`]) and take whole messages out
/// ([`FrameDecoder::next_message`]). Pure: it never reads or waits.
///
/// After an error the decoder stays failed and returns the same error.
#[derive(Debug)]
pub struct FrameDecoder {
    max_message: usize,
    buf: BytesMut,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder refusing messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            buf: BytesMut::new(),
            failed: None,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let flag = self.buf[0];
        let header_err = match flag {
            0 => None,
            1 => Some(FrameError::Compressed),
            other => Some(FrameError::BadFlag(other)),
        };
        if let Some(e) = header_err {
            return Err(self.fail(e));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_message {
            return Err(self.fail(FrameError::TooLarge {
                len,
                max: self.max_message,
            }));
        }
        // No reserving ahead for the declared length: five bytes must not
        // buy a large allocation. The buffer grows only with bytes pushed.
        if self.buf.len() - FRAME_HEADER_LEN < len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Whether no bytes of an unfinished frame are held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Call at end of stream: an error if a frame was left unfinished.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.buf.is_empty() => Ok(()),
            None => Err(FrameError::Truncated),
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.buf.clear();
        self.failed = Some(e.clone());
        e
    }
}

/// Frames one uncompressed message. gRPC lengths are 32-bit: a message
/// of 4 GiB or more cannot be framed and gets a clamped (wrong) length,
/// so callers must bound what they frame, as they bound what they decode.
pub fn encode_frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + msg.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(msg);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        for m in Method::ALL {
            assert_eq!(Method::from_grpc_path(&m.grpc_path()), Some(m));
        }
        assert_eq!(
            Method::from_grpc_path("/google.firestore.v1.Firestore/Commit"),
            Some(Method::Commit)
        );
        assert_eq!(
            Method::from_grpc_path("/google.firestore.v1.Firestore/ExecutePipeline"),
            None
        );
        assert_eq!(
            Method::from_grpc_path("/google.firestore.v1beta1.Firestore/Commit"),
            None
        );
        assert_eq!(Method::from_grpc_path("Commit"), None);
        let client: Vec<_> = Method::ALL
            .into_iter()
            .filter(|m| m.client_streaming())
            .collect();
        assert_eq!(client, [Method::Write, Method::Listen]);
        let server: Vec<_> = Method::ALL
            .into_iter()
            .filter(|m| m.server_streaming())
            .collect();
        assert_eq!(
            server,
            [
                Method::BatchGetDocuments,
                Method::RunQuery,
                Method::RunAggregationQuery,
                Method::Write,
                Method::Listen
            ]
        );
    }

    fn stream(messages: &[&[u8]]) -> Vec<u8> {
        messages.iter().flat_map(|m| encode_frame(m)).collect()
    }

    #[test]
    fn decodes_split_at_every_boundary() {
        let msgs: [&[u8]; 4] = [b"hello", b"", b"x", &[7u8; 300]];
        let wire = stream(&msgs);
        for cut in 0..=wire.len() {
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert!(d.is_empty(), "cut {cut}");
            assert!(d.finish().is_ok());
            assert_eq!(got.len(), msgs.len(), "cut {cut}");
            for (g, m) in got.iter().zip(msgs) {
                assert_eq!(&g[..], m);
            }
        }
        // Byte by byte.
        let mut d = FrameDecoder::new(1024);
        let mut n = 0;
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while d.next_message().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, msgs.len());
    }

    #[test]
    fn refuses_bad_frames() {
        let mut d = FrameDecoder::new(10);
        d.push(&[1, 0, 0, 0, 1, 9]);
        let e = d.next_message().unwrap_err();
        assert_eq!(e, FrameError::Compressed);
        assert_eq!(
            e.to_string(),
            "compressed request messages are not supported"
        );
        // Stays failed.
        d.push(&encode_frame(b"ok"));
        assert_eq!(d.next_message(), Err(FrameError::Compressed));

        let mut d = FrameDecoder::new(10);
        d.push(&encode_frame(&[0; 11])[..5]);
        assert_eq!(
            d.next_message(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );

        let mut d = FrameDecoder::new(10);
        d.push(&[2, 0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(FrameError::BadFlag(2)));

        let mut d = FrameDecoder::new(10);
        d.push(&[0, 0, 0]);
        assert_eq!(d.next_message(), Ok(None));
        assert!(!d.is_empty());
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
