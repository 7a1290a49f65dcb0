//! Splitting a client's byte stream into JSON messages.
//!
//! QMP is a stream of JSON values, not of lines: the `qemu.qmp` Python
//! client sends each command as compact JSON with no newline after it, while
//! libvirt ends each with CRLF and people at `socat` press Enter. So, like
//! QEMU's streaming parser, a message ends when its outermost `{...}` or
//! `[...]` closes (tracking strings and escapes, so brackets inside strings do
//! not count); newlines are only whitespace between messages. Input that
//! starts with anything else is garbage and ends at the next newline, so a
//! mistyped line gets one error and the connection carries on.
//!
//! Bounded: a message longer than [`MAX_MESSAGE`] bytes is reported as
//! [`Frame::TooLong`] and everything up to the next newline is discarded
//! (newline is the only resynchronisation point that does not depend on the
//! broken message). The connection stays open.

/// The longest message kept, in bytes. QMP commands are tiny; anything near
/// this is a mistake or an attack.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// One complete JSON text (or a garbage line), without surrounding whitespace.
    Message(Vec<u8>),
    /// A message passed `MAX_MESSAGE` and was dropped.
    TooLong,
}

#[derive(Debug)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// The longest message kept: `MAX_MESSAGE`, or less where a fuzz
    /// target wants the same logic reached with fewer bytes.
    limit: usize,
    /// Open brackets of the current message; 0 between messages.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Inside a message that is not an object or array: ends at newline.
    garbage: bool,
    /// Dropping bytes up to the next newline after an oversized message.
    discarding: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self::with_limit(MAX_MESSAGE)
    }
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            depth: 0,
            in_string: false,
            escaped: false,
            garbage: false,
            discarding: false,
        }
    }

    /// Bytes held for an unfinished message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    fn finish(&mut self, out: &mut Vec<Frame>) {
        out.push(Frame::Message(std::mem::take(&mut self.buf)));
        self.reset();
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.garbage = false;
    }

    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            if self.discarding {
                if b == b'\n' {
                    self.discarding = false;
                }
                continue;
            }
            if self.depth == 0 && !self.garbage {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => self.depth = 1,
                    _ => self.garbage = true,
                }
                self.buf.push(b);
                continue;
            }
            if self.garbage {
                if b == b'\n' {
                    self.finish(out);
                    continue;
                }
            } else if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            self.buf.push(b);
            let ended = !self.garbage && self.depth == 0;
            // The limit is checked before a message ends, too: its closing
            // bracket may be the byte that takes it over.
            if self.buf.len() > self.limit {
                out.push(Frame::TooLong);
                self.reset();
                // Resynchronise at the next newline, unless this byte was it
                // or ended the message.
                self.discarding = !ended && b != b'\n';
            } else if ended {
                self.finish(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(s.as_bytes().to_vec())
    }

    #[test]
    fn newline_free_concatenated_messages_split() {
        // What qemu.qmp sends: compact JSON, no terminator.
        let out = frames(&[br#"{"execute":"qmp_capabilities"}{"execute":"stop","id":"__qmp#00001"}"#]);
        assert_eq!(
            out,
            [msg(r#"{"execute":"qmp_capabilities"}"#), msg(r#"{"execute":"stop","id":"__qmp#00001"}"#)]
        );
    }

    #[test]
    fn crlf_terminated_and_split_across_reads() {
        let out = frames(&[b"  {\"exe", b"cute\": \"st", b"op\"}\r\n", b"{\"a\":[1,{\"b\":2}]}\n"]);
        assert_eq!(out, [msg(r#"{"execute": "stop"}"#), msg(r#"{"a":[1,{"b":2}]}"#)]);
    }

    #[test]
    fn brackets_and_escaped_quotes_inside_strings_do_not_count() {
        let text = r#"{"id":"}]{[\"\\","execute":"x"}"#;
        assert_eq!(frames(&[text.as_bytes()]), [msg(text)]);
    }

    #[test]
    fn multi_line_objects_are_one_message() {
        assert_eq!(frames(&[b"{\n \"execute\":\n \"stop\"\n}\n"]), [msg("{\n \"execute\":\n \"stop\"\n}")]);
    }

    #[test]
    fn garbage_ends_at_newline_and_the_next_message_parses() {
        let out = frames(&[b"hello world\n{\"execute\":\"stop\"}"]);
        assert_eq!(out, [msg("hello world"), msg(r#"{"execute":"stop"}"#)]);
    }

    #[test]
    fn unbalanced_close_ends_a_message_for_the_parser_to_reject() {
        assert_eq!(frames(&[b"{\"a\":1]"]), [msg("{\"a\":1]")]);
    }

    #[test]
    fn oversized_message_is_dropped_up_to_the_next_newline() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        let mut big = b"{\"execute\":\"".to_vec();
        big.resize(MAX_MESSAGE + 10, b'a');
        f.push(&big, &mut out);
        assert_eq!(out, [Frame::TooLong]);
        assert_eq!(f.pending(), 0, "memory is bounded");
        f.push(b"aaaa\"}{\"still\":\"discarded\"}\n{\"execute\":\"stop\"}", &mut out);
        assert_eq!(out, [Frame::TooLong, msg(r#"{"execute":"stop"}"#)]);
    }

    /// A message whose closing bracket is byte MAX_MESSAGE + 1 used to get
    /// through whole (the length was checked only while it was still open).
    #[test]
    fn message_one_byte_over_the_limit_is_too_long() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        let mut big = vec![b'['; 1];
        big.resize(MAX_MESSAGE, b' ');
        big.push(b']');
        assert_eq!(big.len(), MAX_MESSAGE + 1);
        f.push(&big, &mut out);
        // It ended, so nothing after it is discarded.
        f.push(b"{\"execute\":\"stop\"}", &mut out);
        assert_eq!(out, [Frame::TooLong, msg(r#"{"execute":"stop"}"#)]);
        // Exactly MAX_MESSAGE bytes is fine.
        out.clear();
        let mut ok = vec![b'['; 1];
        ok.resize(MAX_MESSAGE - 1, b' ');
        ok.push(b']');
        f.push(&ok, &mut out);
        assert_eq!(out, [Frame::Message(ok)]);
    }

    /// The fuzz target frames with a small limit; it must be the same rule.
    #[test]
    fn a_smaller_limit_applies_the_same_rule() {
        let mut f = Framer::with_limit(8);
        let mut out = Vec::new();
        f.push(b"[1,2,3,4]{\"a\":1234}\n[1,2,3]", &mut out);
        assert_eq!(out, [Frame::TooLong, Frame::TooLong, msg("[1,2,3]")]);
        assert_eq!(Framer::new().limit, MAX_MESSAGE);
    }

    #[test]
    fn oversized_garbage_is_bounded_too() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for _ in 0..5 {
            f.push(&[b'x'; MAX_MESSAGE / 2], &mut out);
            assert!(f.pending() <= MAX_MESSAGE);
        }
        assert_eq!(out, [Frame::TooLong]);
    }
}
