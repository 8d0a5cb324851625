use nub_tests::{fn_id, sandbox};

#[test]
fn echo_once() {
    let mut s = sandbox();
    assert_eq!(s.call_raw(fn_id::ECHO, b"hello").unwrap(), b"hello");
}
