//! Prints the error a user sees for each fault selector of the default guest.
fn main() {
    for selector in 0u8..=11 {
        let mut s = nub_tests::sandbox();
        let err = s
            .call_raw(nub_tests::fn_id::FAULT, &[selector])
            .unwrap_err();
        println!("{selector:2}: {err}");
    }
    let mut s = nub_tests::sandbox();
    let _ = s.call_raw(nub_tests::fn_id::FAULT, &[0]);
    println!("next call: {}", s.call_raw(1, b"").unwrap_err());
}
