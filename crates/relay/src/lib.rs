//! A response body whose end waits for its outcome record.
//!
//! Latchkey streams what an upstream answers (a pack, a Firestore stream)
//! without buffering it, yet must not let a caller learn of a success that
//! nobody recorded (DESIGN invariant 6). [`HeldEnd`] wraps the upstream's
//! body: data passes as it comes, the *end* is held back (a Git response's
//! last chunk, where report-status ends; a gRPC response's trailers, where
//! its status is), and it is released only once the gateway's `finish` step
//! has recorded the outcome. When the record fails, the end is never sent:
//! the caller sees a failed request. A caller that goes away early still gets
//! its outcome recorded.
//!
//! This crate knows nothing of Git, Firestore or the audit log: a target
//! supplies a [`Tap`] (what to learn from the bytes on the way) and the
//! `finish` future (what to record, and how to end). It does no I/O of its
//! own beyond spawning `finish` on the current Tokio runtime when the body
//! is dropped early.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};

/// The error type of a [`HeldEnd`] body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which part of the response is the end that waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The last data chunk: Git's report-status, and a fetch's final
    /// flush, end there. Ready chunks are merged up to 64 KiB before they
    /// are passed on, so a small-page upstream (FastCGI writes 4 KiB) does
    /// not cost a write per page.
    LastChunk,
    /// Only the trailers: every data frame passes at once (a `Listen`
    /// stream must not lag a message behind), and the gRPC status waits.
    Trailers,
}

/// What a [`Tap`] wants done with the chunk it was just shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapSays {
    /// Pass it on (as [`Hold`] says).
    Pass,
    /// Keep it, and every chunk after it, until the tap says `Pass` again:
    /// for a value that must be acted on before the caller may see it (a
    /// new transaction id is bound before its response reaches the caller).
    Hold,
}

/// Reads the response on its way (pure: no I/O). `()` is the tap that
/// reads nothing.
pub trait Tap: Send + Unpin + 'static {
    /// Shown every data chunk, in order.
    fn feed(&mut self, chunk: &Bytes) -> TapSays;
}

impl Tap for () {
    fn feed(&mut self, _: &Bytes) -> TapSays {
        TapSays::Pass
    }
}

/// Why a response did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndError {
    /// The upstream's stream failed; the detail is for the log.
    Upstream(String),
    /// The upstream ended without trailers where they were expected.
    NoTrailers,
    /// The caller went away before the end.
    CallerGone,
}

/// How the upstream's response ended: the input of the outcome record.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// Data bytes the upstream sent (passed, held, or dropped).
    pub bytes_out: u64,
    /// The upstream's trailers, when it sent some.
    pub trailers: Option<HeaderMap>,
    /// `None` when the stream ended cleanly.
    pub error: Option<EndError>,
}

/// What the held end becomes once `finish` has run.
#[derive(Debug, Clone)]
pub enum Release {
    /// Send what was held, then the upstream's own trailers (if any).
    Pass,
    /// Send what was held, then these trailers instead of the upstream's
    /// (a gRPC refusal status when the outcome could not be recorded).
    Trailers(HeaderMap),
    /// Never send what was held; end the body with an error, so the
    /// caller sees a failed request rather than an unrecorded success.
    Fail,
}

/// The step that records the outcome, given the tap and how the stream
/// ended. Runs once: at the end, or (spawned) when the caller goes away.
pub type Finish<T> = Box<dyn FnOnce(T, Ending) -> BoxFuture + Send>;

/// The future a [`Finish`] returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = Release> + Send>>;

/// Merge ready chunks up to this size before passing them on.
const COALESCE_BYTES: usize = 64 * 1024;

enum State {
    Streaming,
    Finishing(BoxFuture),
    Flushing,
    Done,
}

/// A response body whose end is released only after its outcome record;
/// see the crate docs.
pub struct HeldEnd<B, T: Tap> {
    inner: B,
    hold: Hold,
    tap: Option<T>,
    /// Chunks the tap asked to keep.
    tapped: Vec<Bytes>,
    tap_holding: bool,
    /// Ready chunks, merged ([`Hold::LastChunk`]).
    ready: BytesMut,
    /// The last chunk seen ([`Hold::LastChunk`]).
    last: Option<Bytes>,
    trailers: Option<HeaderMap>,
    /// The trailers to send once released.
    release_trailers: Option<HeaderMap>,
    bytes_out: u64,
    error: Option<EndError>,
    failed: bool,
    finish: Option<Finish<T>>,
    state: State,
}

impl<B, T: Tap> HeldEnd<B, T> {
    /// Wraps `inner`; `finish` records the outcome and says how to end.
    pub fn new(inner: B, hold: Hold, tap: T, finish: Finish<T>) -> Self {
        Self {
            inner,
            hold,
            tap: Some(tap),
            tapped: Vec::new(),
            tap_holding: false,
            ready: BytesMut::new(),
            last: None,
            trailers: None,
            release_trailers: None,
            bytes_out: 0,
            error: None,
            failed: false,
            finish: Some(finish),
            state: State::Streaming,
        }
    }

    fn start_finishing(&mut self, error: Option<EndError>) {
        self.error = error;
        let ending = Ending {
            bytes_out: self.bytes_out,
            trailers: self.trailers.clone(),
            error: self.error.clone(),
        };
        let tap = self.tap.take();
        // The tapped chunks go out with the rest once released.
        for chunk in std::mem::take(&mut self.tapped) {
            self.push_ready(chunk);
        }
        let fut: BoxFuture = match (self.finish.take(), tap) {
            (Some(finish), Some(tap)) => finish(tap, ending),
            _ => Box::pin(async { Release::Pass }),
        };
        self.state = State::Finishing(fut);
    }

    /// Queues a chunk in [`Hold::LastChunk`] order: the previous last chunk
    /// becomes ready, this one is the new last.
    fn push_ready(&mut self, chunk: Bytes) {
        if let Some(prev) = self.last.replace(chunk) {
            self.ready.extend_from_slice(&prev);
        }
    }
}

impl<B, T> Body for HeldEnd<B, T>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    T: Tap,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Streaming => {
                    let polled = Pin::new(&mut this.inner).poll_frame(cx);
                    match polled {
                        Poll::Pending => {
                            if this.hold == Hold::LastChunk && !this.ready.is_empty() {
                                let out = this.ready.split().freeze();
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(frame))) => {
                            let frame = match frame.into_data() {
                                Ok(data) => data,
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        this.trailers = Some(t);
                                        this.start_finishing(None);
                                    }
                                    continue;
                                }
                            };
                            this.bytes_out += frame.len() as u64;
                            let says = match this.tap.as_mut() {
                                Some(tap) => tap.feed(&frame),
                                None => TapSays::Pass,
                            };
                            match says {
                                TapSays::Hold => {
                                    this.tap_holding = true;
                                    this.tapped.push(frame);
                                    continue;
                                }
                                TapSays::Pass if this.tap_holding => {
                                    this.tap_holding = false;
                                    this.tapped.push(frame);
                                    let held = std::mem::take(&mut this.tapped);
                                    match this.hold {
                                        Hold::LastChunk => {
                                            for chunk in held {
                                                this.push_ready(chunk);
                                            }
                                        }
                                        Hold::Trailers => {
                                            let mut all = BytesMut::new();
                                            for chunk in held {
                                                all.extend_from_slice(&chunk);
                                            }
                                            return Poll::Ready(Some(Ok(Frame::data(
                                                all.freeze(),
                                            ))));
                                        }
                                    }
                                }
                                TapSays::Pass => match this.hold {
                                    Hold::Trailers => {
                                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                                    }
                                    Hold::LastChunk => {
                                        let big = frame.len() >= COALESCE_BYTES;
                                        if let Some(prev) = this.last.replace(frame) {
                                            if this.ready.is_empty() && big {
                                                return Poll::Ready(Some(Ok(Frame::data(prev))));
                                            }
                                            this.ready.extend_from_slice(&prev);
                                        }
                                    }
                                },
                            }
                            if this.ready.len() >= COALESCE_BYTES {
                                let out = this.ready.split().freeze();
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                        Poll::Ready(Some(Err(e))) => {
                            tracing::warn!(error = %e, "upstream response failed mid-stream");
                            this.start_finishing(Some(EndError::Upstream(e.to_string())));
                        }
                        Poll::Ready(None) => {
                            let error =
                                (this.hold == Hold::Trailers).then_some(EndError::NoTrailers);
                            this.start_finishing(error);
                        }
                    }
                }
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(release) => {
                        match release {
                            Release::Pass => {
                                this.release_trailers = this.trailers.take();
                            }
                            Release::Trailers(t) => this.release_trailers = Some(t),
                            Release::Fail => {
                                // INVARIANT (DESIGN 6): nothing acknowledged is
                                // lost. The held end is never sent.
                                this.last = None;
                                this.ready.clear();
                                this.failed = true;
                            }
                        }
                        this.state = State::Flushing;
                    }
                },
                State::Flushing => {
                    if !this.ready.is_empty() {
                        let out = this.ready.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    if let Some(last) = this.last.take() {
                        return Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                    if let Some(t) = this.release_trailers.take() {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    this.state = State::Done;
                    let failed = this.failed
                        || matches!(this.error, Some(EndError::Upstream(_)))
                            && this.hold == Hold::LastChunk;
                    if failed {
                        return Poll::Ready(Some(
                            Err("the response could not be completed".into()),
                        ));
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl<B, T: Tap> Drop for HeldEnd<B, T> {
    fn drop(&mut self) {
        // The caller went away before the end: still record the outcome.
        let Some(finish) = self.finish.take() else {
            if let State::Finishing(_) = self.state {
                // Recording had started; let it complete.
                let fut = std::mem::replace(&mut self.state, State::Done);
                if let (State::Finishing(fut), Ok(rt)) =
                    (fut, tokio::runtime::Handle::try_current())
                {
                    rt.spawn(fut);
                }
            }
            return;
        };
        let Some(tap) = self.tap.take() else {
            return;
        };
        let ending = Ending {
            bytes_out: self.bytes_out,
            trailers: self.trailers.take(),
            error: Some(EndError::CallerGone),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(finish(tap, ending));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A scripted upstream body: these frames, then the end (or an error).
    struct Script(VecDeque<Result<Frame<Bytes>, String>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = String;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn data(s: &str) -> Result<Frame<Bytes>, String> {
        Ok(Frame::data(Bytes::from(s.to_owned())))
    }

    fn recorder(release: Release) -> (Arc<Mutex<Vec<Ending>>>, Finish<()>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let finish: Finish<()> = Box::new(move |(), ending| {
            s.lock().unwrap().push(ending);
            Box::pin(async move { release })
        });
        (seen, finish)
    }

    async fn drain<B: Body<Data = Bytes> + Unpin>(mut b: B) -> (Vec<u8>, Option<HeaderMap>, bool)
    where
        B::Error: std::fmt::Debug,
    {
        let (mut out, mut trailers, mut failed) = (Vec::new(), None, false);
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => match f.into_data() {
                    Ok(d) => out.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        (out, trailers, failed)
    }

    #[tokio::test]
    async fn the_last_chunk_waits_for_the_record_and_is_never_sent_when_it_fails() {
        let script = Script([data("0008ok\n"), data("0000")].into());
        let (seen, finish) = recorder(Release::Fail);
        let (out, _, failed) = drain(HeldEnd::new(script, Hold::LastChunk, (), finish)).await;
        assert!(!out.ends_with(b"0000"), "the end (flush) was never sent");
        assert!(failed, "the body ends in an error");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].bytes_out, 11);
        assert_eq!(seen[0].error, None);
    }

    #[tokio::test]
    async fn a_recorded_end_passes_whole() {
        let script = Script([data("a"), data("b"), data("c")].into());
        let (_, finish) = recorder(Release::Pass);
        let (out, _, failed) = drain(HeldEnd::new(script, Hold::LastChunk, (), finish)).await;
        assert_eq!(out, b"abc");
        assert!(!failed);
    }

    #[tokio::test]
    async fn trailers_wait_and_can_be_replaced() {
        let mut up = HeaderMap::new();
        up.insert("grpc-status", http::HeaderValue::from_static("0"));
        let script = Script([data("m1"), data("m2"), Ok(Frame::trailers(up))].into());
        let mut refusal = HeaderMap::new();
        refusal.insert("grpc-status", http::HeaderValue::from_static("14"));
        let (seen, finish) = recorder(Release::Trailers(refusal));
        let (out, trailers, failed) = drain(HeldEnd::new(script, Hold::Trailers, (), finish)).await;
        assert_eq!(out, b"m1m2");
        assert!(!failed);
        assert_eq!(trailers.unwrap()["grpc-status"], "14");
        assert_eq!(
            seen.lock().unwrap()[0].trailers.as_ref().unwrap()["grpc-status"],
            "0"
        );
    }

    #[tokio::test]
    async fn an_upstream_failure_is_reported_to_finish() {
        let script = Script([data("x"), Err("reset".into())].into());
        let (seen, finish) = recorder(Release::Pass);
        let (_, _, failed) = drain(HeldEnd::new(script, Hold::LastChunk, (), finish)).await;
        assert!(failed);
        assert_eq!(
            seen.lock().unwrap()[0].error,
            Some(EndError::Upstream("reset".into()))
        );
    }

    /// Holds chunks until it has seen a `!`.
    struct UntilBang(bool);
    impl Tap for UntilBang {
        fn feed(&mut self, chunk: &Bytes) -> TapSays {
            if !self.0 && chunk.contains(&b'!') {
                self.0 = true;
            }
            if self.0 { TapSays::Pass } else { TapSays::Hold }
        }
    }

    #[tokio::test]
    async fn a_tap_can_hold_the_front_until_it_has_seen_enough() {
        let script = Script([data("ab"), data("c!"), data("d")].into());
        let finish: Finish<UntilBang> = Box::new(|tap, _| {
            assert!(tap.0);
            Box::pin(async { Release::Pass })
        });
        let mut body = HeldEnd::new(script, Hold::Trailers, UntilBang(false), finish);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abc!", "held chunks come out together");
        let (rest, _, _) = drain(body).await;
        assert_eq!(rest, b"d");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_still_gets_its_outcome_recorded() {
        let script = Script([data("a"), data("b")].into());
        let (seen, finish) = recorder(Release::Pass);
        let mut body = HeldEnd::new(script, Hold::Trailers, (), finish);
        let _ = body.frame().await;
        drop(body);
        tokio::task::yield_now().await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].error, Some(EndError::CallerGone));
    }
}
