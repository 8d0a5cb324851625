//! Turning `--data`/`--file`/`--hex` into payload bytes, and hex encoding.

use std::{io::Read, path::Path};

use crate::{cli::PayloadArgs, error::CliError};

/// The payload bytes the options name (empty when none is given).
pub fn load(args: &PayloadArgs) -> Result<Vec<u8>, CliError> {
    if let Some(text) = &args.data {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(hex) = &args.hex {
        return decode_hex(hex).map_err(CliError::BadHex);
    }
    if let Some(path) = &args.file {
        return read_file(path);
    }
    Ok(Vec::new())
}

/// Reads a file, or stdin for `-`.
fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let read_err = |source| CliError::Read {
        path: path.to_path_buf(),
        source,
    };
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(read_err)?;
        return Ok(bytes);
    }
    std::fs::read(path).map_err(read_err)
}

/// Decodes hex digits (either case) into bytes. An `0x` prefix and
/// whitespace anywhere are ignored; the digit count must be even.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u8> = t
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c.to_digit(16) {
            Some(d) => Ok(d as u8),
            None => Err(format!("`{c}` is not a hex digit")),
        })
        .collect::<Result<_, _>>()?;
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of hex digits ({}); each byte takes two",
            digits.len()
        ));
    }
    Ok(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// Encodes bytes as lowercase hex without separators.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&encode_hex(&bytes)), Ok(bytes));
        assert_eq!(encode_hex(&[]), "");
        assert_eq!(encode_hex(&[0x05, 0xab, 0xFF]), "05abff");
    }

    #[test]
    fn hex_input_forms() {
        assert_eq!(decode_hex("0500"), Ok(vec![5, 0]));
        assert_eq!(decode_hex("0xABcd"), Ok(vec![0xab, 0xcd]));
        assert_eq!(
            decode_hex(" de ad\nbe ef "),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(decode_hex(""), Ok(vec![]));
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert!(decode_hex("0x0x00").is_err());
    }

    #[test]
    fn payload_sources() {
        let none = PayloadArgs {
            data: None,
            file: None,
            hex: None,
        };
        assert_eq!(load(&none).unwrap(), b"");
        let data = PayloadArgs {
            data: Some("hi".into()),
            ..none
        };
        assert_eq!(load(&data).unwrap(), b"hi");
        let missing = PayloadArgs {
            data: None,
            file: Some("/nonexistent/nub-payload".into()),
            hex: None,
        };
        let err = load(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/nub-payload"), "{err}");
    }
}
