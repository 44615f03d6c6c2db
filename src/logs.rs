//! Turning a child's output bytes into log entries.
//!
//! Pure code over byte slices: `LineSplitter` cuts a stream into lines (and
//! overlong lines into pieces), `Grouper` joins indented continuation lines
//! onto the entry before them, `detect_level` guesses the severity, and
//! `Batch` collects finished entries, each followed by a NUL byte so that the
//! C API can lend them out without copying again. Reading the pipes and the
//! 250 ms idle timer live in the driver.

use std::time::Duration;

use crate::events::{Level, Stream};

/// Default upper bound of one delivered entry.
pub const DEFAULT_MAX_LINE_BYTES: usize = 65536;

/// A partial line or a pending multiline entry is delivered after this long
/// without new output on its stream.
pub const IDLE_FLUSH: Duration = Duration::from_millis(250);

/// How a piece produced by the splitter relates to its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceKind {
    /// The whole line, or the last piece of an overlong line.
    End,
    /// A piece of an overlong line; more of the same line follows.
    Cut,
}

/// Splits a byte stream into lines: one per `\n`, a trailing `\r` dropped,
/// lines longer than `max` cut into pieces of at most `max` bytes.
///
/// Memory is bounded: at most `max + 1` bytes are held between calls.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        assert!(max > 0, "max_line_bytes must be positive");
        LineSplitter {
            partial: Vec::new(),
            max,
        }
    }

    /// True when bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Feeds one chunk as read from the pipe.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut impl FnMut(&[u8], PieceKind)) {
        while let Some(i) = memchr(b'\n', chunk) {
            let (line, rest) = (&chunk[..i], &chunk[i + 1..]);
            if self.partial.is_empty() {
                emit_line(line, self.max, out);
            } else {
                let mut held = std::mem::take(&mut self.partial);
                held.extend_from_slice(line);
                emit_line(&held, self.max, out);
                held.clear();
                self.partial = held;
            }
            chunk = rest;
        }
        if chunk.is_empty() {
            return;
        }
        self.partial.extend_from_slice(chunk);
        // Hold up to max + 1 bytes: the last one may be a `\r` that the next
        // chunk turns into the end of a line that fits.
        while self.partial.len() > self.max + 1 {
            let at = cut_point(&self.partial, self.max);
            out(&self.partial[..at], PieceKind::Cut);
            self.partial.drain(..at);
        }
    }

    /// Delivers a held partial line (end of stream, or the idle timer).
    pub fn flush(&mut self, out: &mut impl FnMut(&[u8], PieceKind)) {
        if self.partial.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.partial);
        emit_line(&held, self.max, out);
        self.partial = held;
        self.partial.clear();
    }
}

/// Emits a complete line (without its `\n`), cut if needed.
fn emit_line(mut line: &[u8], max: usize, out: &mut impl FnMut(&[u8], PieceKind)) {
    if let [head @ .., b'\r'] = line {
        line = head;
    }
    while line.len() > max {
        let at = cut_point(line, max);
        out(&line[..at], PieceKind::Cut);
        line = &line[at..];
    }
    out(line, PieceKind::End);
}

/// Where to cut a too-long buffer: at `max`, moved back (by at most 3 bytes)
/// so as not to split a UTF-8 sequence, which bindings decode.
fn cut_point(buf: &[u8], max: usize) -> usize {
    debug_assert!(buf.len() > max);
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut at = max;
    while at > 0 && max - at < 3 && is_continuation(buf[at]) {
        at -= 1;
    }
    if at == 0 || is_continuation(buf[at]) {
        max
    } else {
        at
    }
}

/// The C library's memchr (vectorised): every byte a child writes passes
/// through here, and a byte-at-a-time loop was the largest cost of reading.
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.is_empty() {
        return None;
    }
    // SAFETY: reads at most `haystack.len()` bytes of `haystack`.
    let p = unsafe {
        libc::memchr(
            haystack.as_ptr() as *const libc::c_void,
            needle as libc::c_int,
            haystack.len(),
        )
    };
    if p.is_null() {
        None
    } else {
        Some(p as usize - haystack.as_ptr() as usize)
    }
}

/// Where finished entries go. The entry pushed last may still grow by a
/// continuation line, or be taken back, until the next push.
pub trait EntrySink {
    /// Adds an entry: `text` is its first line (no `\n`).
    fn push(&mut self, text: &[u8]);
    /// Appends `\n` and `text` to the last entry pushed.
    fn extend_last(&mut self, text: &[u8]);
    /// Removes the last entry pushed, moving its text into `into`.
    fn take_last(&mut self, into: &mut Vec<u8>);
}

/// Where the entry that may still grow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    /// In `pending`: it began in an earlier chunk.
    Pending,
    /// The sink's last entry: it began in this chunk.
    InSink,
}

/// Joins lines that begin with a space or a tab onto the entry before them
/// (stack traces). An entry is complete when the next non-indented line
/// arrives or on `flush`. Entries never exceed `max` bytes: a continuation
/// that would not fit starts a new entry. Pieces of overlong lines are passed
/// through on their own.
///
/// An entry is written into the sink once, when its first line arrives, and
/// grown there: only one still open when a chunk ends is moved aside (into
/// `pending`) while the sink's entries are delivered. Holding every entry
/// in `pending` until the next line arrived copied each line twice.
#[derive(Debug)]
pub struct Grouper {
    enabled: bool,
    max: usize,
    pending: Vec<u8>,
    open: Open,
    open_len: usize,
    in_cut: bool,
}

impl Grouper {
    pub fn new(enabled: bool, max: usize) -> Self {
        Grouper {
            enabled,
            max,
            pending: Vec::new(),
            open: Open::None,
            open_len: 0,
            in_cut: false,
        }
    }

    pub fn has_pending(&self) -> bool {
        self.open != Open::None
    }

    pub fn piece(&mut self, bytes: &[u8], kind: PieceKind, out: &mut impl EntrySink) {
        if !self.enabled {
            out.push(bytes);
            return;
        }
        if kind == PieceKind::Cut || self.in_cut {
            self.flush(out);
            self.in_cut = kind == PieceKind::Cut;
            out.push(bytes);
            return;
        }
        let indented = matches!(bytes.first(), Some(b' ' | b'\t'));
        if indented && self.open != Open::None && self.open_len + 1 + bytes.len() <= self.max {
            if self.open == Open::Pending {
                self.pending.push(b'\n');
                self.pending.extend_from_slice(bytes);
            } else {
                out.extend_last(bytes);
            }
            self.open_len += 1 + bytes.len();
            return;
        }
        self.flush(out);
        out.push(bytes);
        self.open = Open::InSink;
        self.open_len = bytes.len();
    }

    /// The sink is about to be delivered: an entry that may still grow is
    /// taken back until the next chunk or `flush`.
    pub fn end_chunk(&mut self, out: &mut impl EntrySink) {
        if self.open == Open::InSink {
            out.take_last(&mut self.pending);
            self.open = Open::Pending;
        }
    }

    /// Completes the open entry. Like every entry, it reaches the sink as
    /// its first line (`push`, which takes one line: the level comes from
    /// it) and the rest (`extend_last`).
    pub fn flush(&mut self, out: &mut impl EntrySink) {
        if self.open == Open::Pending {
            match memchr(b'\n', &self.pending) {
                Some(i) => {
                    out.push(&self.pending[..i]);
                    out.extend_last(&self.pending[i + 1..]);
                }
                None => out.push(&self.pending),
            }
            self.pending.clear();
        }
        self.open = Open::None;
    }
}

/// Splitter and grouper of one stream, fed by the driver.
#[derive(Debug)]
pub struct LineAssembler {
    splitter: LineSplitter,
    grouper: Grouper,
}

impl LineAssembler {
    pub fn new(multiline: bool, max_line_bytes: usize) -> Self {
        LineAssembler {
            splitter: LineSplitter::new(max_line_bytes),
            grouper: Grouper::new(multiline, max_line_bytes),
        }
    }

    /// Feeds bytes; every finished entry is pushed to `out`, which may be
    /// delivered once this returns.
    pub fn push(&mut self, chunk: &[u8], out: &mut impl EntrySink) {
        let grouper = &mut self.grouper;
        self.splitter
            .push(chunk, &mut |piece, kind| grouper.piece(piece, kind, out));
        self.grouper.end_chunk(out);
    }

    /// Delivers everything held (end of stream or idle timer).
    pub fn flush(&mut self, out: &mut impl EntrySink) {
        let grouper = &mut self.grouper;
        self.splitter
            .flush(&mut |piece, kind| grouper.piece(piece, kind, out));
        self.grouper.flush(out);
    }

    /// True when something is held that the idle timer must deliver.
    pub fn holds_data(&self) -> bool {
        self.splitter.has_partial() || self.grouper.has_pending()
    }
}

/// Guesses the severity of an entry from the first level word in its first
/// line (ERROR, WARN, INFO, DEBUG, TRACE and their usual spellings, any case,
/// as a whole word), looking at most at the first 256 bytes.
pub fn detect_level(text: &[u8]) -> Level {
    let head = &text[..text.len().min(256)];
    match memchr(b'\n', head) {
        Some(i) => line_level(&head[..i]),
        None => line_level(head),
    }
}

const HIGH: u64 = 0x8080_8080_8080_8080;
const CASE: u64 = 0x2020_2020_2020_2020;

/// `detect_level` for text known to be one line, which the log path has
/// already split (a newline here is just another non-letter).
///
/// This runs over every line the children write, so it looks at sixteen
/// bytes at a time (two words of eight: one branch for both) and stops only
/// where a word starts: a letter whose previous byte is not one. A 64-byte
/// line of two words costs four such steps.
fn line_level(line: &[u8]) -> Level {
    let head = &line[..line.len().min(256)];
    // Bit 7 of the byte before the current chunk, if it is a letter.
    let mut carry = 0u64;
    let mut base = 0;
    let mut pairs = head.chunks_exact(16);
    for pair in &mut pairs {
        let (a, b) = pair.split_at(8);
        let la = letter_bits(le_word(a));
        let lb = letter_bits(le_word(b));
        let sa = la & !((la << 8) | carry);
        let sb = lb & !((lb << 8) | (la >> 56));
        if sa | sb != 0 {
            if let Some(level) = level_at_starts(head, base, sa) {
                return level;
            }
            if let Some(level) = level_at_starts(head, base + 8, sb) {
                return level;
            }
        }
        carry = lb >> 56;
        base += 16;
    }
    let mut rest = pairs.remainder();
    if rest.len() >= 8 {
        let letters = letter_bits(le_word(&rest[..8]));
        let starts = letters & !((letters << 8) | carry);
        if let Some(level) = level_at_starts(head, base, starts) {
            return level;
        }
        carry = letters >> 56;
        base += 8;
        rest = &rest[8..];
    }
    if rest.is_empty() {
        return Level::Unknown;
    }
    let x = match head.len().checked_sub(8) {
        // The last eight bytes, shifted so that `rest` comes first and
        // zeros (non-letters) follow: one load rather than a copy.
        Some(from) => le_word(&head[from..]) >> (8 * (8 - rest.len())),
        None => le_bytes(rest),
    };
    let letters = letter_bits(x);
    let starts = letters & !((letters << 8) | carry);
    level_at_starts(head, base, starts).unwrap_or(Level::Unknown)
}

/// Eight bytes (`b` holds exactly eight) as a little-endian integer.
#[inline(always)]
fn le_word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

/// Bit 7 of each byte of `x` (eight bytes, first byte lowest) set iff that
/// byte is an ASCII letter. Per byte, without carries between bytes: fold to
/// lower case with bit 7 cleared, then bit 7 of `b + k` is set iff
/// b >= 0x80 - k.
fn letter_bits(x: u64) -> u64 {
    let lower = (x & !HIGH) | CASE;
    let ge_a = lower + 0x1f1f_1f1f_1f1f_1f1f; // >= b'a'
    let gt_z = lower + 0x0505_0505_0505_0505; // >= b'z' + 1
    ge_a & !gt_z & !x & HIGH
}

/// Up to eight bytes as a little-endian integer, zeros after them.
fn le_bytes(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0, |v, &byte| (v << 8) | u64::from(byte))
}

/// The level of the first level word among the word starts marked in
/// `starts` (bit 7 of byte k: a word starts at `base + k`).
#[inline(always)]
fn level_at_starts(head: &[u8], base: usize, mut starts: u64) -> Option<Level> {
    // The first letters of level words, as bits indexed by `letter & 31`
    // (the same for both cases): this rules out most words with one test.
    const FIRST: u32 = {
        let mut mask = 0u32;
        let letters = b"tdiwefcp";
        let mut k = 0;
        while k < letters.len() {
            mask |= 1 << (letters[k] & 31);
            k += 1;
        }
        mask
    };
    while starts != 0 {
        let at = base + (starts.trailing_zeros() / 8) as usize;
        starts &= starts - 1;
        if FIRST >> (head[at] & 31) & 1 != 0 {
            if let Some(level) = level_word_at(head, at) {
                return Some(level);
            }
        }
    }
    None
}

/// The level named by the word starting at `at`, if it is 4 to 8 letters
/// long and a level word. Kept out of line so that the scan loop keeps its
/// constants in registers.
#[cold]
#[inline(never)]
fn level_word_at(head: &[u8], at: usize) -> Option<Level> {
    let x = match head.get(at..at + 8) {
        Some(c) => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
        None => le_bytes(&head[at..]),
    };
    let not_letters = !letter_bits(x) & HIGH;
    let len = if not_letters == 0 {
        if head.get(at + 8).is_some_and(u8::is_ascii_alphabetic) {
            return None; // nine letters or more
        }
        8
    } else {
        (not_letters.trailing_zeros() / 8) as usize
    };
    if len < 4 {
        return None;
    }
    let mask = if len == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    };
    level_word((x | CASE) & mask)
}

/// `word` (4 to 8 ASCII letters) packed in lower case, so that each level
/// spelling is one integer compare.
const fn pack(word: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut k = 0;
    while k < word.len() {
        v |= ((word[k] | 0x20) as u64) << (8 * k);
        k += 1;
    }
    v
}

fn level_word(packed: u64) -> Option<Level> {
    const TRACE: u64 = pack(b"trace");
    const DEBUG: u64 = pack(b"debug");
    const INFO: u64 = pack(b"info");
    const WARN: u64 = pack(b"warn");
    const WARNING: u64 = pack(b"warning");
    const ERROR: u64 = pack(b"error");
    const FATAL: u64 = pack(b"fatal");
    const CRITICAL: u64 = pack(b"critical");
    const PANIC: u64 = pack(b"panic");
    Some(match packed {
        TRACE => Level::Trace,
        DEBUG => Level::Debug,
        INFO => Level::Info,
        WARN | WARNING => Level::Warn,
        ERROR | FATAL | CRITICAL | PANIC => Level::Error,
        _ => return None,
    })
}

/// Metadata of one entry in a `Batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub offset: usize,
    pub len: usize,
    pub stream: Stream,
    pub level: Level,
    pub pid: u32,
    pub timestamp_ms: i64,
}

/// Finished entries waiting to be handed to the log callback together. Each
/// entry's text is followed by a NUL byte in `arena`.
#[derive(Debug, Default)]
pub struct Batch {
    arena: Vec<u8>,
    entries: Vec<EntryMeta>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; `text` is its first line (more are added by
    /// `extend_last`).
    pub fn push(&mut self, text: &[u8], stream: Stream, pid: u32, timestamp_ms: i64) {
        debug_assert!(!text.contains(&b'\n'), "a line");
        let offset = self.arena.len();
        self.arena.extend_from_slice(text);
        self.arena.push(0);
        self.entries.push(EntryMeta {
            offset,
            len: text.len(),
            stream,
            level: line_level(text),
            pid,
            timestamp_ms,
        });
    }

    /// Appends `\n` and `text` to the last entry (its level, which comes
    /// from the first line, stands).
    pub fn extend_last(&mut self, text: &[u8]) {
        let Some(e) = self.entries.last_mut() else {
            return;
        };
        self.arena.pop();
        self.arena.push(b'\n');
        self.arena.extend_from_slice(text);
        self.arena.push(0);
        e.len += 1 + text.len();
    }

    /// Removes the last entry, moving its text into `into`.
    pub fn take_last(&mut self, into: &mut Vec<u8>) {
        if let Some(e) = self.entries.pop() {
            into.clear();
            into.extend_from_slice(&self.arena[e.offset..e.offset + e.len]);
            self.arena.truncate(e.offset);
        }
    }

    /// The batch as the sink of one stream's entries.
    pub fn sink(&mut self, stream: Stream, pid: u32, timestamp_ms: i64) -> BatchSink<'_> {
        BatchSink {
            batch: self,
            stream,
            pid,
            timestamp_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> &[EntryMeta] {
        &self.entries
    }

    /// The text of an entry, and the same text with its NUL terminator.
    pub fn text_with_nul(&self, e: &EntryMeta) -> &[u8] {
        &self.arena[e.offset..e.offset + e.len + 1]
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.arena.clear();
        // Do not keep a huge arena alive after a burst.
        if self.arena.capacity() > 4 << 20 {
            self.arena.shrink_to(1 << 20);
        }
    }
}

/// A `Batch` taking the entries of one stream, read at one time.
pub struct BatchSink<'a> {
    batch: &'a mut Batch,
    stream: Stream,
    pid: u32,
    timestamp_ms: i64,
}

impl EntrySink for BatchSink<'_> {
    fn push(&mut self, text: &[u8]) {
        self.batch
            .push(text, self.stream, self.pid, self.timestamp_ms);
    }

    fn extend_last(&mut self, text: &[u8]) {
        self.batch.extend_last(text);
    }

    fn take_last(&mut self, into: &mut Vec<u8>) {
        self.batch.take_last(into);
    }
}

/// Entries collected one `Vec` each (tests, tools).
impl EntrySink for Vec<Vec<u8>> {
    fn push(&mut self, text: &[u8]) {
        Vec::push(self, text.to_vec());
    }

    fn extend_last(&mut self, text: &[u8]) {
        if let Some(last) = self.last_mut() {
            last.push(b'\n');
            last.extend_from_slice(text);
        }
    }

    fn take_last(&mut self, into: &mut Vec<u8>) {
        if let Some(last) = self.pop() {
            *into = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]], flush: bool) -> Vec<(Vec<u8>, PieceKind)> {
        let mut s = LineSplitter::new(max);
        let mut out = vec![];
        for c in chunks {
            s.push(c, &mut |b, k| out.push((b.to_vec(), k)));
        }
        if flush {
            s.flush(&mut |b, k| out.push((b.to_vec(), k)));
        }
        out
    }

    fn lines(max: usize, chunks: &[&[u8]], flush: bool) -> Vec<String> {
        split(max, chunks, flush)
            .into_iter()
            .map(|(b, _)| String::from_utf8(b).unwrap())
            .collect()
    }

    /// Entries as a consumer sees them: delivered after each chunk (the
    /// sink emptied), then after the flush.
    fn group(multiline: bool, max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut a = LineAssembler::new(multiline, max);
        let mut out = vec![];
        let mut sink: Vec<Vec<u8>> = vec![];
        for c in chunks {
            a.push(c, &mut sink);
            out.extend(
                sink.drain(..)
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
            );
        }
        a.flush(&mut sink);
        out.extend(
            sink.drain(..)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        );
        out
    }

    #[test]
    fn one_line_per_newline_including_empty_lines() {
        assert_eq!(lines(100, &[b"a\n\nb\n"], false), ["a", "", "b"]);
    }

    #[test]
    fn trailing_carriage_return_is_dropped_only_at_the_end() {
        assert_eq!(
            lines(100, &[b"a\r\nb\rc\r\n\r\n"], false),
            ["a", "b\rc", ""]
        );
    }

    #[test]
    fn carriage_return_split_from_its_newline_is_still_dropped() {
        assert_eq!(lines(100, &[b"abc\r", b"\n"], false), ["abc"]);
        assert_eq!(lines(3, &[b"abc\r", b"\n"], false), ["abc"]);
    }

    #[test]
    fn partial_line_waits_for_the_rest_or_a_flush() {
        assert_eq!(lines(100, &[b"hel", b"lo\nwor"], false), ["hello"]);
        assert_eq!(lines(100, &[b"hel", b"lo\nwor"], true), ["hello", "wor"]);
        assert_eq!(lines(100, &[b"x\r"], true), ["x"]);
        assert!(lines(100, &[], true).is_empty());
    }

    #[test]
    fn long_line_is_cut_into_pieces_of_at_most_max() {
        let out = split(4, &[b"abcdefghij\n"], false);
        assert_eq!(
            out,
            vec![
                (b"abcd".to_vec(), PieceKind::Cut),
                (b"efgh".to_vec(), PieceKind::Cut),
                (b"ij".to_vec(), PieceKind::End)
            ]
        );
        // Exactly max: one piece.
        assert_eq!(
            split(4, &[b"abcd\n"], false),
            vec![(b"abcd".to_vec(), PieceKind::End)]
        );
    }

    #[test]
    fn long_line_without_newline_is_delivered_while_reading() {
        let out = split(4, &[b"abcdefghijk"], false);
        assert_eq!(
            out,
            vec![
                (b"abcd".to_vec(), PieceKind::Cut),
                (b"efgh".to_vec(), PieceKind::Cut)
            ]
        );
    }

    #[test]
    fn long_line_across_many_small_chunks() {
        let line: Vec<u8> = (0..1000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = line.clone();
        input.push(b'\n');
        let chunks: Vec<&[u8]> = input.chunks(7).collect();
        let out = split(64, &chunks, false);
        assert!(out.iter().all(|(b, _)| b.len() <= 64));
        assert_eq!(out.last().unwrap().1, PieceKind::End);
        let joined: Vec<u8> = out.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(joined, line);
    }

    #[test]
    fn cuts_do_not_split_utf8_sequences() {
        // "é" is two bytes; max 3 would cut inside the second "é".
        let out = split(3, &["aéé\n".as_bytes()], false);
        assert_eq!(out[0].0, "aé".as_bytes());
        assert_eq!(out[1].0, "é".as_bytes());
        // Bytes that are all continuations are cut at max anyway.
        let junk = [0x80u8; 10];
        let out = split(4, &[&junk, b"\n"], false);
        assert!(out.iter().all(|(b, _)| b.len() <= 4));
        assert_eq!(out.iter().map(|(b, _)| b.len()).sum::<usize>(), 10);
    }

    #[test]
    fn every_chunking_gives_the_same_lines() {
        let input = b"alpha\r\nbeta\n\ngamma delta epsilon\nzeta";
        let whole = lines(8, &[input], true);
        for cut in 0..input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(lines(8, &[a, b], true), whole, "cut at {cut}");
        }
    }

    #[test]
    fn multiline_joins_indented_lines() {
        let out = group(
            true,
            1000,
            &[b"Traceback:\n  File x\n\tline 2\nnext\n  orphan? no, joined\n"],
        );
        assert_eq!(
            out,
            [
                "Traceback:\n  File x\n\tline 2",
                "next\n  orphan? no, joined"
            ]
        );
    }

    #[test]
    fn multiline_off_delivers_every_line() {
        let out = group(false, 1000, &[b"a\n  b\nc\n"]);
        assert_eq!(out, ["a", "  b", "c"]);
    }

    #[test]
    fn indented_first_line_starts_its_own_entry() {
        assert_eq!(group(true, 1000, &[b"  a\n  b\nc\n"]), ["  a\n  b", "c"]);
    }

    #[test]
    fn multiline_entry_never_exceeds_max() {
        let out = group(true, 11, &[b"head\n  1234\n  5678\n"]);
        assert_eq!(out, ["head\n  1234", "  5678"]);
        assert!(out.iter().all(|e| e.len() <= 11));
    }

    #[test]
    fn pieces_of_a_long_line_stand_alone_in_multiline_mode() {
        let out = group(true, 4, &[b"head\n  abcdefgh\n  x\n"]);
        assert_eq!(out, ["head", "  ab", "cdef", "gh", "  x"]);
    }

    #[test]
    fn level_words_are_found_in_any_case_as_whole_words() {
        // The eight-byte test agrees with is_ascii_alphabetic on every byte,
        // whatever its neighbours.
        for b in 0..=255u8 {
            for fill in [0u8, b'a', b'Z', 0xff, b'@'] {
                let mut buf = [fill; 8];
                buf[3] = b;
                let bit = letter_bits(u64::from_le_bytes(buf)) & (0x80 << 24);
                assert_eq!(bit != 0, b.is_ascii_alphabetic(), "{b} among {fill}");
            }
        }
        for (line, level) in [
            (&b"info"[..], Level::Info),
            (b"WARN", Level::Warn),
            (b"critical", Level::Error),
            (b"criticals", Level::Unknown),
            (b"1234567info", Level::Info),
            (b"1234567infos", Level::Unknown),
            (b"xxxxxxxinfo", Level::Unknown),
            (b"xxxxxxx info", Level::Info),
            (b"x:warning", Level::Warn),
        ] {
            assert_eq!(
                detect_level(line),
                level,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(detect_level(b"2024-01-01 ERROR boom"), Level::Error);
        assert_eq!(detect_level(b"[warn] disk"), Level::Warn);
        assert_eq!(detect_level(b"WARNING: x"), Level::Warn);
        assert_eq!(detect_level(b"level=info msg=\"no error\""), Level::Info);
        assert_eq!(detect_level(b"DEBUG"), Level::Debug);
        assert_eq!(detect_level(b"trace: x"), Level::Trace);
        assert_eq!(detect_level(b"FATAL oops"), Level::Error);
        assert_eq!(detect_level(b"information only"), Level::Unknown);
        assert_eq!(detect_level(b"errors=0 infos"), Level::Unknown);
        assert_eq!(detect_level(b""), Level::Unknown);
        assert_eq!(detect_level(b"plain\nERROR in second line"), Level::Unknown);
        assert_eq!(
            detect_level(b"0123456789abcdefghij[{`@Z]  xxxxxxxxxxxxxxxxx ERROR"),
            Level::Error
        );
        assert_eq!(
            detect_level("\u{e9}t\u{e9} ok 12345678 Warning".as_bytes()),
            Level::Warn
        );
        assert_eq!(detect_level(b"xxxxxxxxerror"), Level::Unknown);
        assert_eq!(detect_level(b"12345678info"), Level::Info);
        let mut edge = vec![b'.'; 252];
        edge.extend_from_slice(b"info");
        assert_eq!(detect_level(&edge), Level::Info);
        edge.extend_from_slice(b"rmation");
        assert_eq!(detect_level(&edge), Level::Info, "cut at 256 bytes");
        edge.truncate(251);
        edge.extend_from_slice(b"xinfo");
        assert_eq!(detect_level(&edge), Level::Unknown);
    }

    /// The plain definition: split the first line (of the first 256 bytes)
    /// into runs of ASCII letters and take the first that is a level word.
    fn detect_level_reference(text: &[u8]) -> Level {
        let head = &text[..text.len().min(256)];
        let head = head.split(|&b| b == b'\n').next().unwrap_or(head);
        head.split(|b| !b.is_ascii_alphabetic())
            .find_map(|w| {
                let lower = w.to_ascii_lowercase();
                Some(match &lower[..] {
                    b"trace" => Level::Trace,
                    b"debug" => Level::Debug,
                    b"info" => Level::Info,
                    b"warn" | b"warning" => Level::Warn,
                    b"error" | b"fatal" | b"critical" | b"panic" => Level::Error,
                    _ => return None,
                })
            })
            .unwrap_or(Level::Unknown)
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn detect_level_matches_its_definition(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        &b"ERROR"[..], b"wArNiNg", b"Info", b"trace", b"DEBUG", b"warn",
                        b"Fatal", b"critical", b"panic", b"criticals", b"pack", b"infos",
                    ])
                    .prop_map(|w: &[u8]| w.to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..70),
                    proptest::collection::vec(
                        proptest::sample::select(b"abceiwxyzAZ @[`{09\n-\xc3".to_vec()),
                        0..40,
                    ),
                ],
                0..12,
            )
        ) {
            let text = parts.concat();
            proptest::prop_assert_eq!(detect_level(&text), detect_level_reference(&text));
        }
    }

    #[test]
    fn batch_keeps_text_nul_terminated() {
        let mut b = Batch::new();
        b.push(b"one", Stream::Stdout, 7, 1);
        b.push(b"", Stream::Stderr, 7, 2);
        b.push(b"ERROR two", Stream::Stdout, 7, 3);
        let e: Vec<_> = b.entries().to_vec();
        assert_eq!(b.text_with_nul(&e[0]), b"one\0");
        assert_eq!(b.text_with_nul(&e[1]), b"\0");
        assert_eq!(b.text_with_nul(&e[2]), b"ERROR two\0");
        assert_eq!(e[2].level, Level::Error);
        assert_eq!(e[1].stream, Stream::Stderr);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn an_entry_held_across_chunks_takes_its_level_from_its_first_line() {
        // Held in `pending` while the first chunk is delivered, then pushed
        // again: the level word of a continuation line must not count.
        let mut a = LineAssembler::new(true, 65536);
        let mut b = Batch::new();
        a.push(
            b"Traceback (most recent call last):\n  at warn.x\n",
            &mut b.sink(Stream::Stdout, 1, 10),
        );
        assert!(b.is_empty());
        a.push(b"next line\n", &mut b.sink(Stream::Stdout, 1, 20));
        let e = b.entries().to_vec();
        assert_eq!(
            b.text_with_nul(&e[0]),
            b"Traceback (most recent call last):\n  at warn.x\0"
        );
        assert_eq!(e[0].level, Level::Unknown);
        // The same entry read in one chunk gets the same level.
        let mut one = Batch::new();
        let mut a = LineAssembler::new(true, 65536);
        a.push(
            b"Traceback (most recent call last):\n  at warn.x\nnext line\n",
            &mut one.sink(Stream::Stdout, 1, 10),
        );
        assert_eq!(one.entries()[0].level, Level::Unknown);
    }

    #[test]
    fn entries_grow_in_the_batch_and_one_still_open_waits_for_the_next_chunk() {
        let mut a = LineAssembler::new(true, 100);
        let mut b = Batch::new();
        let texts = |b: &Batch| -> Vec<(Vec<u8>, Level)> {
            b.entries()
                .iter()
                .map(|e| (b.text_with_nul(e).to_vec(), e.level))
                .collect()
        };
        a.push(
            b"INFO a\n b\nERROR c\n d\n",
            &mut b.sink(Stream::Stdout, 1, 10),
        );
        // "ERROR c" may still grow: taken back until the next chunk.
        assert_eq!(texts(&b), [(b"INFO a\n b\0".to_vec(), Level::Info)]);
        assert!(a.holds_data());
        a.push(b" e\nf\n", &mut b.sink(Stream::Stdout, 1, 20));
        assert_eq!(
            texts(&b),
            [
                (b"INFO a\n b\0".to_vec(), Level::Info),
                (b"ERROR c\n d\n e\0".to_vec(), Level::Error)
            ]
        );
        a.flush(&mut b.sink(Stream::Stdout, 1, 30));
        assert_eq!(texts(&b)[2], (b"f\0".to_vec(), Level::Unknown));
        assert!(!a.holds_data());
        // The arena holds exactly the three entries, back to back.
        let e = b.entries().to_vec();
        assert_eq!(e[1].offset, e[0].offset + e[0].len + 1);
        assert_eq!(e[2].offset, e[1].offset + e[1].len + 1);
    }
}
