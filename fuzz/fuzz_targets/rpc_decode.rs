//! Frame bodies as the host decodes them: `decode_response` (a guest's answer)
//! and `decode_request` (a guest's host call). Bodies sit 16-aligned in the
//! ring, so the input is copied to a 16-aligned buffer first; it is also
//! decoded at a misaligned start (1..=15, from the input length) which must
//! be refused or read safely, never trusted blindly.
#![no_main]

use javm_cap::wire::AlignedVec;
use libfuzzer_sys::fuzz_target;
use nub_host_common::rpc::{
    decode_request, decode_response, encode_request, encode_response, request_size, response_size,
};

/// Whether `inner` lies within `outer`.
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fn check(body: &[u8], round_trip: bool) {
    if let Ok((fn_id, payload)) = decode_request(body) {
        assert!(within(body, payload), "payload points outside the body");
        if round_trip {
            let mut out = AlignedVec::<16>::new();
            out.resize(request_size(payload.len()), 0);
            let n = encode_request(&mut out, fn_id, payload).expect("request_size is enough");
            assert_eq!(decode_request(&out[..n]), Ok((fn_id, payload)));
        }
    }
    if let Ok((status, payload)) = decode_response(body) {
        assert!(within(body, payload), "payload points outside the body");
        if round_trip {
            let mut out = AlignedVec::<16>::new();
            out.resize(response_size(payload.len()), 0);
            let n = encode_response(&mut out, status, payload).expect("response_size is enough");
            assert_eq!(decode_response(&out[..n]), Ok((status, payload)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut aligned = AlignedVec::<16>::with_capacity(data.len() + 16);
    aligned.extend_from_slice(data);
    check(&aligned, true);

    let shift = 1 + data.len() % 15;
    let mut shifted = AlignedVec::<16>::with_capacity(data.len() + 16);
    shifted.resize(shift, 0);
    shifted.extend_from_slice(data);
    check(&shifted[shift..], false);
});
