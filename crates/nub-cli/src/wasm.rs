//! `nub wasm run` and `nub wasm call`: WebAssembly in a [`WasmSandbox`].

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::ExitCode;

use nub_sandbox::CallMode;
use nub_wasm::{ExternKind, InstanceOptions, ValType, Value, Wasi, WasmSandbox};

use crate::cli::{WasmArgs, WasmCallArgs, WasmCommand, WasmRunArgs, WasmSandboxArgs};
use crate::error::CliError;

/// Runs `nub wasm ...`; the exit code to leave with.
pub fn run(args: &WasmArgs) -> Result<ExitCode, CliError> {
    match &args.command {
        WasmCommand::Run(args) => run_program(args),
        WasmCommand::Call(args) => call_export(args).map(|()| ExitCode::SUCCESS),
    }
}

/// `nub wasm run`: `_start`, stdio inherited, the program's exit code.
fn run_program(args: &WasmRunArgs) -> Result<ExitCode, CliError> {
    let wasi = environment(&args.sandbox, &args.file)?.args(args.args.iter().cloned());
    let (mut sbox, instance) = start(&args.sandbox, &args.file, wasi)?;
    let outcome = sbox.run(&instance)?;
    // A process exit status is a byte: the code modulo 256, as a shell
    // shows it.
    Ok(ExitCode::from(outcome.exit_code as u8))
}

/// `nub wasm call`: one export, its results on one line.
fn call_export(args: &WasmCallArgs) -> Result<(), CliError> {
    let wasi = environment(&args.sandbox, &args.file)?;
    let (mut sbox, instance) = start(&args.sandbox, &args.file, wasi)?;
    let exports = sbox.exports(&instance)?;
    let sig = exports
        .iter()
        .find_map(|e| match &e.kind {
            ExternKind::Func(sig) if e.name == args.export => Some(sig),
            _ => None,
        })
        .ok_or_else(|| {
            let names: Vec<&str> = exports
                .iter()
                .filter(|e| matches!(e.kind, ExternKind::Func(_)))
                .map(|e| e.name.as_str())
                .collect();
            CliError::WasmUsage(format!(
                "the module exports no function `{}` (its functions: {})",
                args.export,
                names.join(", ")
            ))
        })?;
    if sig.params.len() != args.args.len() {
        return Err(CliError::WasmUsage(format!(
            "`{}` takes {} argument(s) {:?}, {} given",
            args.export,
            sig.params.len(),
            sig.params,
            args.args.len()
        )));
    }
    let values = sig
        .params
        .iter()
        .zip(&args.args)
        .map(|(ty, text)| parse_value(*ty, text))
        .collect::<Result<Vec<Value>, CliError>>()?;
    let results = sbox.call_values(&instance, &args.export, &values)?;
    let line: Vec<String> = results.iter().map(show_value).collect();
    println!("{}", line.join(" "));
    Ok(())
}

/// The WASI environment both commands give: argv[0] = FILE as given, the
/// `--env` variables, the seed, nub's own stdio.
fn environment(opts: &WasmSandboxArgs, file: &Path) -> Result<Wasi, CliError> {
    let mut wasi = Wasi::new()
        .arg(file.display().to_string())
        .inherit_stdio()
        .seed(match &opts.seed {
            Some(hex) => parse_seed(hex)?,
            None => random_seed(),
        });
    for var in &opts.env {
        let (key, value) = var
            .split_once('=')
            .ok_or_else(|| CliError::WasmUsage(format!("--env {var}: expected KEY=VALUE")))?;
        wasi = wasi.env(key, value);
    }
    Ok(wasi)
}

/// Boots the sandbox, loads FILE and instantiates it with `wasi`.
fn start(
    opts: &WasmSandboxArgs,
    file: &Path,
    wasi: Wasi,
) -> Result<(WasmSandbox, nub_wasm::Instance), CliError> {
    let bytes = read_module(file)?;
    let mut config = WasmSandbox::default_config()
        .with_max_execution_time(opts.timeout)
        .with_call_mode(match opts.resident {
            Some(spin) => CallMode::Resident { spin },
            None => CallMode::Exit,
        });
    if let Some(heap) = opts.heap {
        config = config.with_heap_size(heap);
    }
    let mut sbox = WasmSandbox::with_config(config)?;
    let module = sbox.load(&bytes)?;
    let mut options = InstanceOptions::default().with_wasi(wasi);
    if let Some(fuel) = opts.fuel {
        options = options.with_fuel(fuel);
    }
    let instance = sbox.instantiate_with(&module, options)?;
    Ok((sbox, instance))
}

/// A module's bytes: a binary `.wasm`, or WAT text.
fn read_module(file: &Path) -> Result<Vec<u8>, CliError> {
    let bad = |reason: String| CliError::ReadModule {
        path: file.to_owned(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(|wasm| wasm.into_owned())
        .map_err(|e| bad(format!("neither a wasm binary nor WAT: {e}")))
}

/// `text` as a value of type `ty`.
fn parse_value(ty: ValType, text: &str) -> Result<Value, CliError> {
    let bad = |what: &str| CliError::WasmUsage(format!("`{text}` is not {what}"));
    Ok(match ty {
        ValType::I32 => Value::I32(parse_int(text).ok_or_else(|| bad("an i32"))?),
        ValType::I64 => Value::I64(parse_int(text).ok_or_else(|| bad("an i64"))?),
        ValType::F32 => Value::F32(text.parse::<f32>().map_err(|_| bad("an f32"))?.to_bits()),
        ValType::F64 => Value::F64(text.parse::<f64>().map_err(|_| bad("an f64"))?.to_bits()),
        other => {
            return Err(CliError::WasmUsage(format!(
                "a {other:?} parameter cannot be given on the command line"
            )));
        }
    })
}

/// A decimal or `0x` hex integer; negative decimals too. Hex may use the
/// full unsigned range (`0xffffffff` is -1 as an i32).
fn parse_int<T>(text: &str) -> Option<T>
where
    T: std::str::FromStr + TryFrom<i128>,
{
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        let bits = u64::from_str_radix(hex, 16).ok()?;
        let width = std::mem::size_of::<T>() * 8;
        if width < 64 && bits >> width != 0 {
            return None;
        }
        // Reinterpret the bits as a signed value of T's width.
        let signed = ((bits as i128) << (128 - width)) >> (128 - width);
        T::try_from(signed).ok()
    } else {
        text.parse().ok()
    }
}

/// A result as it is printed: integers in decimal, floats as Rust prints
/// them (`nan`, `inf` included).
fn show_value(value: &Value) -> String {
    match *value {
        Value::I32(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(bits) => f32::from_bits(bits).to_string(),
        Value::F64(bits) => f64::from_bits(bits).to_string(),
    }
}

/// `--seed HEX`: up to 32 bytes, zero-padded.
fn parse_seed(hex: &str) -> Result<[u8; 32], CliError> {
    let bytes =
        crate::payload::decode_hex(hex).map_err(|e| CliError::WasmUsage(format!("--seed: {e}")))?;
    let mut seed = [0u8; 32];
    let slot = seed
        .get_mut(..bytes.len())
        .ok_or_else(|| CliError::WasmUsage("--seed: at most 32 bytes (64 hex digits)".into()))?;
    slot.copy_from_slice(&bytes);
    Ok(seed)
}

/// 32 bytes from the host's randomly keyed hasher (std seeds it from the
/// operating system).
fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_usize(i);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_in_decimal_and_hex_within_their_width() {
        assert_eq!(parse_int::<i32>("-5"), Some(-5));
        assert_eq!(parse_int::<i32>("0xffffffff"), Some(-1));
        assert_eq!(parse_int::<i32>("0x100000000"), None);
        assert_eq!(parse_int::<i64>("0xffffffffffffffff"), Some(-1));
        assert_eq!(parse_int::<i64>("0x10"), Some(16));
        assert_eq!(parse_int::<i32>("4294967296"), None);
        assert_eq!(parse_int::<i32>("x"), None);
    }

    #[test]
    fn values_parse_by_type_and_print_back() {
        let v = parse_value(ValType::F64, "1.5").unwrap();
        assert_eq!(show_value(&v), "1.5");
        assert_eq!(show_value(&parse_value(ValType::I64, "-7").unwrap()), "-7");
        assert!(parse_value(ValType::I32, "1.5").is_err());
        assert!(parse_value(ValType::FuncRef, "0").is_err());
    }

    #[test]
    fn seeds_are_hex_up_to_32_bytes() {
        assert_eq!(parse_seed("01ff").unwrap()[..3], [1, 0xff, 0]);
        assert!(parse_seed(&"00".repeat(33)).is_err());
        assert!(parse_seed("zz").is_err());
        assert_ne!(random_seed(), random_seed());
    }
}
