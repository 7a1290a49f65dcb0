//! QMP framing and request handling on an arbitrary client byte stream, fed
//! in arbitrary chunks (some repeated many times, to reach the size limit,
//! which is scaled down here: see `LIMIT`).
//!
//! Invariants:
//! - bounded memory: the framer never holds more than its limit
//!   and never hands out a longer message;
//! - how the stream is split into reads does not change the frames;
//! - every frame gets exactly one reply, a `return` or an `error` object,
//!   carrying the request's `id` when the message was an object with one;
//! - negotiation happens at most once, and VM commands run only after it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use kennel::interfaces::qmp::fuzz_api::{respond_to, Framer};

#[derive(Arbitrary, Debug)]
enum Chunk {
    Bytes(Vec<u8>),
    /// `byte` repeated, up to the stream cap.
    Repeat {
        byte: u8,
        count: u16,
        extra: u8,
    },
}

/// The framer's message limit here. The server's is `MAX_MESSAGE` (64 KiB);
/// the logic is the same for any limit, and with 64 KiB every execution
/// framed hundreds of KiB byte by byte (~270 executions a second). The
/// 64 KiB limit itself is unit-tested in `framing.rs`.
const LIMIT: usize = 256;
/// Bytes of stream looked at per input: past a few messages' worth of the
/// limit the framer has no new state to reach.
const STREAM_CAP: usize = 8 * LIMIT;

fuzz_target!(|chunks: Vec<Chunk>| {
    let mut stream = Vec::new();
    let mut framer = Framer::with_limit(LIMIT);
    let mut frames = Vec::new();
    for c in chunks.iter().take(64) {
        let room = STREAM_CAP - stream.len();
        if room == 0 {
            break;
        }
        let bytes = match c {
            Chunk::Bytes(b) => b[..b.len().min(room)].to_vec(),
            Chunk::Repeat { byte, count, extra } => {
                vec![*byte; (usize::from(*count) + usize::from(*extra) * 16).min(room)]
            }
        };
        frames.extend(framer.push(&bytes));
        assert!(framer.pending() <= LIMIT, "framer holds {} bytes", framer.pending());
        stream.extend_from_slice(&bytes);
    }
    for f in frames.iter().flatten() {
        assert!(f.len() <= LIMIT, "a {}-byte message got through", f.len());
        assert!(!f.is_empty());
    }
    // The same stream in one read, and byte by byte (when short), frames alike.
    let mut whole = Framer::with_limit(LIMIT);
    assert_eq!(whole.push(&stream), frames, "framing depends on how reads split the stream");
    if stream.len() <= 2 * LIMIT {
        let mut single = Framer::with_limit(LIMIT);
        let one: Vec<_> = stream.iter().flat_map(|b| single.push(std::slice::from_ref(b))).collect();
        assert_eq!(one, frames, "framing byte by byte differs");
    }

    let mut negotiated = false;
    for frame in frames {
        let request: Option<Value> = frame.as_ref().and_then(|m| serde_json::from_slice(m).ok());
        let mut ran = 0;
        let was = negotiated;
        let (reply, now) = respond_to(frame, negotiated, &mut |_cmd| {
            ran += 1;
            Ok(json!({}))
        });
        let obj = reply.as_object().expect("a reply is an object");
        assert!(obj.contains_key("return") ^ obj.contains_key("error"), "{reply}");
        if let Some(e) = obj.get("error") {
            assert!(e["class"].is_string() && e["desc"].is_string(), "{reply}");
        }
        match request.as_ref().and_then(|r| r.get("id")) {
            Some(id) if request.as_ref().is_some_and(Value::is_object) => {
                assert_eq!(obj.get("id"), Some(id), "reply lost the id: {reply}");
            }
            _ => assert!(obj.get("id").is_none() || request.is_some(), "{reply}"),
        }
        assert!(!(now && was), "negotiated twice");
        assert!(ran <= 1 && (ran == 0 || was), "a VM command ran before negotiation");
        negotiated |= now;
    }
});
