//! The report page the guest fills before a panic/abort/fault exit: any
//! length, any bytes. `Report::decode` never fails; the message must stay in
//! the page and within `MAX_MESSAGE_LEN`, and a decoded report must survive
//! an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nub_host_common::read_u32;
use nub_host_common::report::{
    MAX_MESSAGE_LEN, MESSAGE_LEN_OFFSET, MESSAGE_OFFSET, Report, ReportKind,
};

fuzz_target!(|data: &[u8]| {
    let r = Report::decode(data);
    assert!(r.message.len() <= MAX_MESSAGE_LEN);
    if !r.message.is_empty() {
        let claimed = read_u32(data, MESSAGE_LEN_OFFSET).unwrap() as usize;
        assert_eq!(r.message.len(), claimed.min(MAX_MESSAGE_LEN));
        assert_eq!(
            r.message,
            &data[MESSAGE_OFFSET..MESSAGE_OFFSET + r.message.len()]
        );
    }
    // Lossy decoding is what the host does with the message.
    let _ = String::from_utf8_lossy(r.message);

    let mut page = vec![0u8; 4096];
    r.encode(&mut page);
    let back = Report::decode(&page);
    assert_eq!(back.kind, Some(r.kind.unwrap_or(ReportKind::None)));
    assert_eq!(
        (
            back.vector,
            back.error_code,
            back.rip,
            back.cr2,
            back.rsp,
            back.code
        ),
        (r.vector, r.error_code, r.rip, r.cr2, r.rsp, r.code)
    );
    assert_eq!(back.message, r.message);
});
