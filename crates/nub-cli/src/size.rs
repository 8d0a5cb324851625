//! Byte sizes and durations on the command line: parsing (`64K`, `1M`,
//! `500ms`) and human-readable printing.

use std::time::Duration;

/// Parses a byte count: decimal or `0x` hex digits, then an optional binary
/// suffix `K`/`KB`/`KiB` (×1024), `M`… (×1024²) or `G`… (×1024³), any case.
/// `_` may separate digits.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    // Hex digits include letters, so a hex number takes no suffix.
    let is_hex = t.starts_with("0x") || t.starts_with("0X");
    let split = if is_hex {
        t.len()
    } else {
        t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len())
    };
    let (digits, suffix) = t.split_at(split);
    let digits = digits.trim_end().replace('_', "");
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64K, 1M, 0x1000)"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{s}`: unknown size suffix `{suffix}` (use K, M or G)"
            ));
        }
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` does not fit in 64 bits"))
}

/// Parses a duration: a non-negative number with an optional unit `ms`, `s`
/// (the default) or `m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .trim_end()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 2s, 1.5)"))?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "us" => value / 1e6,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        _ => {
            return Err(format!(
                "`{s}`: unknown duration unit `{unit}` (use ns, us, ms, s or m)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

/// Formats a byte count exactly, in the largest binary unit that divides it:
/// `4 KiB`, `1 MiB`, `1536 KiB`, `100 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hex_numbers() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("0X1f000"), Ok(0x1f000));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert_eq!(parse_size(" 12 "), Ok(12));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn suffixes() {
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64 KB"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2mib"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512B"), Ok(512));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "K", "1T", "1.5M", "-4K", "0x", "12 34", "0xZZ", "1KK"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_size("18446744073709551615").is_ok());
        assert!(parse_size("17179869184G").is_err(), "overflow");
        assert!(parse_size("99999999999999999999").is_err(), "overflow");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "s", "-1s", "1h", "fast", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_sizes_exactly() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(100), "100 B");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1536 << 10), "1536 KiB");
        assert_eq!(format_size(3 << 30), "3 GiB");
        assert_eq!(format_size(4097), "4097 B");
    }
}
