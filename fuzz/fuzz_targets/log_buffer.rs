//! The guest log buffer (`nub_host_common::log_buffer`), both halves.
//!
//! The host half: the input's region is the log buffer as a hostile guest
//! leaves it (header and data area). `read_header` must accept exactly the
//! headers whose `write` fits the data area, and `parse_records` over the
//! first `write` bytes must yield records that are slices of those bytes, in
//! order, each error at the offset where parsing stopped; a buffer that
//! parses cleanly re-encodes (through `append`) to the same bytes.
//!
//! The guest half: `append` over the same hostile header (the guest's own
//! logger after a function scribbled on the buffer) must never write outside
//! the region, touch only `write` and the bytes of its one new record, and
//! store a record that parses back; `count_dropped` and `reset` touch only
//! their header words.
//!
//! Input: 4 parameter bytes (level, target length / 2, message length u16
//! LE), then the region.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::log_buffer::{
    Appended, DROPPED_OFFSET, LOG_HEADER_SIZE, LogError, LogLevel, LogRecord, MAX_MESSAGE_LEN,
    MAX_TARGET_LEN, RECORD_HEADER_SIZE, WRITE_OFFSET, append, capacity, count_dropped,
    parse_records, read_header, reset,
};
use nub_host_common::read_u64;

/// Whether `inner` is the sub-slice `outer[start..start + inner.len()]`.
fn is_at(outer: &[u8], start: usize, inner: &[u8]) -> bool {
    inner.as_ptr() as usize == outer.as_ptr() as usize + start && start + inner.len() <= outer.len()
}

/// Walks the records of a data area; returns them when all parsed.
fn walk(data: &[u8]) -> Option<Vec<LogRecord<'_>>> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut iter = parse_records(data);
    while let Some(parsed) = iter.next() {
        // Every record is at least its header: the walk is bounded.
        assert!(records.len() <= data.len() / RECORD_HEADER_SIZE);
        match parsed {
            Ok(record) => {
                assert_eq!(data[offset], record.level as u8);
                assert_eq!(usize::from(data[offset + 1]), record.target.len());
                let message_len = u16::from_le_bytes([data[offset + 2], data[offset + 3]]);
                assert_eq!(usize::from(message_len), record.message.len());
                let target_at = offset + RECORD_HEADER_SIZE;
                assert!(is_at(data, target_at, record.target), "target not in place");
                let message_at = target_at + record.target.len();
                assert!(
                    is_at(data, message_at, record.message),
                    "message not in place"
                );
                offset = message_at + record.message.len();
                records.push(record);
            }
            Err(LogError::BadLevel { offset: at, level }) => {
                assert_eq!(at, offset);
                assert_eq!(data[at], level);
                assert!(LogLevel::try_from(level).is_err());
                assert!(iter.next().is_none(), "the walk stops at an error");
                return None;
            }
            Err(LogError::Truncated { offset: at }) => {
                assert_eq!(at, offset);
                let rest = &data[at..];
                // Either the record header is cut, or its lengths run past
                // the written bytes.
                if let [level, target_len, m0, m1, body @ ..] = rest {
                    assert!(LogLevel::try_from(*level).is_ok());
                    let wanted =
                        usize::from(*target_len) + usize::from(u16::from_le_bytes([*m0, *m1]));
                    assert!(
                        wanted > body.len(),
                        "a record that fits was called truncated"
                    );
                }
                assert!(iter.next().is_none(), "the walk stops at an error");
                return None;
            }
            Err(other) => panic!("parse_records cannot report {other:?}"),
        }
    }
    assert_eq!(offset, data.len(), "a clean walk covers every written byte");
    Some(records)
}

/// The host half: header check, parse, re-encode.
fn check_read(region: &[u8]) {
    let header = &region[..region.len().min(LOG_HEADER_SIZE)];
    let cap = capacity(region.len());
    let (write, dropped) = match read_header(header, region.len()) {
        Ok(pair) => pair,
        Err(LogError::RegionTooSmall(size)) => {
            assert_eq!(size, region.len());
            assert!(region.len() < LOG_HEADER_SIZE);
            return;
        }
        Err(LogError::WriteOutOfRange { write, capacity }) => {
            assert_eq!(capacity, cap);
            assert_eq!(Some(write), read_u64(region, WRITE_OFFSET));
            assert!(write > cap as u64);
            return;
        }
        Err(other) => panic!("read_header cannot report {other:?}"),
    };
    assert!(write <= cap);
    assert_eq!(read_u64(region, WRITE_OFFSET), Some(write as u64));
    assert_eq!(read_u64(region, DROPPED_OFFSET), Some(dropped));
    let data = &region[LOG_HEADER_SIZE..LOG_HEADER_SIZE + write];
    let Some(records) = walk(data) else {
        return;
    };
    // A clean buffer is exactly what the guest's append would have written
    // for these records (when no message needs the guest's cut).
    if records.iter().all(|r| r.message.len() <= MAX_MESSAGE_LEN) {
        let mut copy = vec![0u8; region.len()];
        for r in &records {
            assert_eq!(
                append(&mut copy, r.level, r.target, r.message),
                Appended::Stored
            );
        }
        assert_eq!(read_u64(&copy, WRITE_OFFSET), Some(write as u64));
        assert_eq!(&copy[LOG_HEADER_SIZE..LOG_HEADER_SIZE + write], data);
    }
}

/// The guest half: `append` (and the header helpers) over a hostile header.
fn check_append(region: &[u8], params: [u8; 4]) {
    let level = LogLevel::try_from(1 + params[0] % 5).expect("1..=5");
    let target: Vec<u8> = (0..usize::from(params[1]) * 2)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let message_len =
        usize::from(u16::from_le_bytes([params[2], params[3]])) % (2 * MAX_MESSAGE_LEN);
    let message: Vec<u8> = (0..message_len).map(|i| i as u8).collect();
    let cap = capacity(region.len());
    // The guest's own reading of the header: a bad `write` restarts at 0.
    let start = read_u64(region, WRITE_OFFSET)
        .and_then(|w| usize::try_from(w).ok())
        .filter(|&w| w <= cap)
        .unwrap_or(0);
    let header_valid = region.len() >= LOG_HEADER_SIZE && read_header(region, region.len()).is_ok();
    let mut after = region.to_vec();
    let outcome = append(&mut after, level, &target, &message);
    assert_eq!(after.len(), region.len());
    let kept_target = &target[..target.len().min(MAX_TARGET_LEN)];
    let whole = RECORD_HEADER_SIZE + kept_target.len() + message.len().min(MAX_MESSAGE_LEN);
    let room = cap - start;
    if outcome == Appended::Full {
        assert_eq!(after, region, "a refused record writes nothing");
        assert!(whole > room, "a record that fits was refused");
        if start == 0 {
            assert!(room <= RECORD_HEADER_SIZE + kept_target.len());
        }
    } else {
        let end = read_u64(&after, WRITE_OFFSET).expect("header present") as usize;
        assert!(
            end > start && end <= cap,
            "write {end} after {start}, capacity {cap}"
        );
        // Only `write` and the new record's bytes changed.
        assert_eq!(
            after[8..LOG_HEADER_SIZE + start],
            region[8..LOG_HEADER_SIZE + start]
        );
        assert_eq!(
            after[LOG_HEADER_SIZE + end..],
            region[LOG_HEADER_SIZE + end..]
        );
        let new = &after[LOG_HEADER_SIZE + start..LOG_HEADER_SIZE + end];
        let mut parsed = parse_records(new);
        let record = parsed.next().expect("one record").expect("it parses");
        assert!(parsed.next().is_none(), "exactly one record");
        assert_eq!(record.level, level);
        assert_eq!(record.target, kept_target);
        assert!(message.starts_with(record.message));
        match outcome {
            Appended::Stored => assert_eq!(record.message, &message[..]),
            Appended::Cut => {
                assert!(record.message.len() < message.len());
                // Only an oversized record is cut, and never below what
                // fits: the cut one fills the room or the message maximum.
                assert!(
                    start == 0 && end == cap || record.message.len() == MAX_MESSAGE_LEN,
                    "cut to {} at {start}..{end} of {cap}",
                    record.message.len()
                );
            }
            Appended::Full => unreachable!(),
        }
        // Appending to a valid buffer keeps its records readable.
        if header_valid && start > 0 {
            let old = walk(&region[LOG_HEADER_SIZE..LOG_HEADER_SIZE + start]);
            if let Some(old) = old {
                let all = walk(&after[LOG_HEADER_SIZE..LOG_HEADER_SIZE + end])
                    .expect("valid records plus one appended parse");
                assert_eq!(all.len(), old.len() + 1);
            }
        }
    }
    // count_dropped saturates and touches only `dropped`; reset empties.
    let mut counted = region.to_vec();
    count_dropped(&mut counted);
    if let Some(before) = read_u64(region, DROPPED_OFFSET) {
        assert_eq!(
            read_u64(&counted, DROPPED_OFFSET),
            Some(before.saturating_add(1))
        );
        assert_eq!(counted[..DROPPED_OFFSET], region[..DROPPED_OFFSET]);
        assert_eq!(counted[DROPPED_OFFSET + 8..], region[DROPPED_OFFSET + 8..]);
    } else {
        assert_eq!(counted, region);
    }
    if region.len() >= LOG_HEADER_SIZE {
        reset(&mut counted);
        assert_eq!(read_header(&counted, counted.len()), Ok((0, 0)));
        assert_eq!(counted[16..], region[16..]);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((params, region)) = data.split_first_chunk::<4>() else {
        return;
    };
    check_read(region);
    check_append(region, *params);
});
