//! `nub image save`: boot a sandbox, run setup calls in it, save it as an
//! image file (`nub_sandbox::persist`) that `nub call --image` starts from.

use nub_sandbox::CallMode;

use crate::{
    call,
    cli::{ImageArgs, ImageCommand, ImageSaveArgs, SetupCall, SetupPayload},
    error::CliError,
    payload::decode_hex,
    size::format_size,
};

/// Runs `nub image`.
pub fn run(args: &ImageArgs) -> Result<(), CliError> {
    match &args.command {
        ImageCommand::Save(args) => save(args),
    }
}

/// Runs `nub image save`: stdout stays empty, the summary goes to stderr.
fn save(args: &ImageSaveArgs) -> Result<(), CliError> {
    // Decode every payload first: a bad --hex fails before any build or
    // boot.
    let payloads = args
        .calls
        .0
        .iter()
        .enumerate()
        .map(|(i, call)| payload_bytes(i + 1, call))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sandbox = call::boot(&args.sandbox, &args.run)?;
    for (i, (call, payload)) in args.calls.0.iter().zip(&payloads).enumerate() {
        sandbox
            .call_raw(call.fn_id, payload)
            .map_err(|source| CliError::SetupCall {
                index: i + 1,
                fn_id: call.fn_id,
                source,
            })?;
    }
    let image = sandbox.capture_image()?;
    image.save(&args.output)?;
    let size = std::fs::metadata(&args.output)
        .map_err(|source| CliError::ReadImage {
            path: args.output.clone(),
            source,
        })?
        .len();
    let info = image.info();
    eprintln!(
        "{}",
        summary(
            &args.output.display().to_string(),
            size,
            info.page_count,
            info.call_mode(),
            args.calls.0.len(),
        )
    );
    Ok(())
}

/// The bytes of setup call `index`'s payload (`index` counts from 1).
fn payload_bytes(index: usize, call: &SetupCall) -> Result<Vec<u8>, CliError> {
    match &call.payload {
        SetupPayload::Empty => Ok(Vec::new()),
        SetupPayload::Text(text) => Ok(text.as_bytes().to_vec()),
        SetupPayload::Hex(hex) => decode_hex(hex).map_err(|reason| CliError::SetupHex {
            index,
            fn_id: call.fn_id,
            reason,
        }),
    }
}

/// The line `nub image save` prints on stderr.
fn summary(file: &str, size: u64, pages: usize, mode: CallMode, calls: usize) -> String {
    let page_bytes = (pages as u64).saturating_mul(nub_host_common::layout::PAGE_SIZE);
    let mode = match mode {
        CallMode::Exit => "exit mode".to_string(),
        CallMode::Resident { spin } => format!("resident mode (spin {spin:?})"),
    };
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    format!(
        "saved {file}: {size} bytes, {pages} {} carried ({}), {mode}, after {calls} setup {}",
        plural(pages, "page", "pages"),
        format_size(page_bytes),
        plural(calls, "call", "calls"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn payloads_decode_in_order_and_name_the_bad_one() {
        let call = |payload| SetupCall { fn_id: 2, payload };
        assert_eq!(payload_bytes(1, &call(SetupPayload::Empty)).unwrap(), b"");
        assert_eq!(
            payload_bytes(1, &call(SetupPayload::Text("hi".into()))).unwrap(),
            b"hi"
        );
        assert_eq!(
            payload_bytes(1, &call(SetupPayload::Hex("0500".into()))).unwrap(),
            [5, 0]
        );
        let err = payload_bytes(3, &call(SetupPayload::Hex("abc".into()))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("setup call 3 (--call 2)"), "{text}");
        assert!(text.contains("odd number of hex digits"), "{text}");
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            summary("c.img", 123_456, 5, CallMode::Exit, 2),
            "saved c.img: 123456 bytes, 5 pages carried (20 KiB), exit mode, after 2 setup calls"
        );
        assert_eq!(
            summary(
                "r.img",
                9,
                1,
                CallMode::Resident {
                    spin: Duration::from_micros(100)
                },
                1
            ),
            "saved r.img: 9 bytes, 1 page carried (4 KiB), resident mode (spin 100µs), \
             after 1 setup call"
        );
    }
}
