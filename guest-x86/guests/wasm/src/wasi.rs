//! WASI preview 1 (`wasi_snapshot_preview1`), the part a sandboxed program
//! needs: arguments, environment, stdin/stdout/stderr, clocks, a seeded
//! random stream and `proc_exit`. Everything else answers `ENOSYS` (or
//! `EBADF` for a descriptor that does not exist): there are no files,
//! directories or sockets. docs/wasm.md, *WASI*, has the table.
//!
//! Each function is a handler over the instance's linear memory (copied
//! from and to with every pointer and length checked: a bad one is
//! `EFAULT`, never a panic) and its [`WasiState`]. Clocks and streamed
//! stdio are host calls (`nub_wasm_abi::wasi_host`).

use alloc::{string::String, vec::Vec};

use nub_arch_x86::nub_interface::{self, Bytes};
use nub_wasm_abi::{
    WasiCaptured, WasiConfig, WasiOutput, WasiStdin, WasmError, wasi_host::WasiClock,
    wasi_host::WasiRead, wasi_host::WasiWrite,
};
use wasmi::{Caller, Extern, FuncType, Linker, Val, ValType};

/// A store's data that may carry a WASI instance's state (the guest's
/// `engine::StoreData`): what the handlers reach through the caller.
pub trait WasiData {
    /// The instance's WASI state, if it was made with WASI.
    fn wasi(&mut self) -> Option<&mut WasiState>;
}

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// WASI errno values (`wasi_snapshot_preview1`'s `errno`).
pub mod errno {
    /// No error.
    pub const SUCCESS: i32 = 0;
    /// Bad file descriptor.
    pub const BADF: i32 = 8;
    /// Bad address: a pointer or length outside linear memory.
    pub const FAULT: i32 = 21;
    /// Invalid argument.
    pub const INVAL: i32 = 28;
    /// I/O error (a host call behind a clock or a stream failed).
    pub const IO: i32 = 29;
    /// Function not supported.
    pub const NOSYS: i32 = 52;
}

/// Most iovecs one `fd_read`/`fd_write` may pass (Linux's `IOV_MAX`).
const MAX_IOVECS: u32 = 1024;
/// Most bytes one host call of a streamed write or read carries.
const HOST_CHUNK: usize = 32 << 10;
/// `filetype::character_device`.
const CHARACTER_DEVICE: u8 = 2;
/// `rights::fd_read` and `rights::fd_write`.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// A NUL-terminated string list laid out as `args_get`/`environ_get` write
/// it: the bytes and where each string starts.
#[derive(Debug, Default)]
struct Strings {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl Strings {
    fn new(items: &[String], what: &str) -> Result<Self, WasmError> {
        let mut list = Self::default();
        for item in items {
            if item.as_bytes().contains(&0) {
                return Err(WasmError::Instantiate(alloc::format!(
                    "a WASI {what} contains a NUL byte"
                )));
            }
            let at = u32::try_from(list.bytes.len())
                .map_err(|_| WasmError::Limit(alloc::format!("the WASI {what} are too long")))?;
            list.offsets.push(at);
            list.bytes.extend_from_slice(item.as_bytes());
            list.bytes.push(0);
        }
        u32::try_from(list.bytes.len())
            .map_err(|_| WasmError::Limit(alloc::format!("the WASI {what} are too long")))?;
        Ok(list)
    }
}

/// Where stdin's bytes come from.
#[derive(Debug)]
enum Stdin {
    /// These bytes, read from `at` on.
    Bytes { data: Vec<u8>, at: usize },
    /// Host calls.
    Host,
}

/// Where stdout or stderr goes, and what it captured.
#[derive(Debug)]
struct Sink {
    fd: u32,
    mode: WasiOutput,
    captured: Vec<u8>,
    truncated: bool,
}

impl Sink {
    fn new(fd: u32, mode: WasiOutput) -> Self {
        Self {
            fd,
            mode,
            captured: Vec::new(),
            truncated: false,
        }
    }

    /// Takes `bytes`; `Err(errno)` when a host call failed.
    fn write(&mut self, bytes: &[u8]) -> Result<(), i32> {
        match self.mode {
            WasiOutput::Discard => Ok(()),
            WasiOutput::Capture { limit } => {
                let room = (limit as usize).saturating_sub(self.captured.len());
                let kept = bytes.get(..room).unwrap_or(bytes);
                self.captured.extend_from_slice(kept);
                self.truncated |= kept.len() < bytes.len();
                Ok(())
            }
            WasiOutput::Host => {
                for chunk in bytes.chunks(HOST_CHUNK) {
                    let args = (self.fd, Bytes::from(chunk.to_vec()));
                    let request =
                        nub_interface::encode_args::<WasiWrite>(&args).map_err(|_| errno::IO)?;
                    let reply = nub_arch_x86::host_call(nub_wasm_abi::WASI_WRITE_FN, &request)
                        .map_err(|_| errno::IO)?;
                    match nub_interface::decode_reply::<WasiWrite>(&reply) {
                        Ok(Ok(())) => {}
                        _ => return Err(errno::IO),
                    }
                }
                Ok(())
            }
        }
    }
}

/// One WASI instance's state: its environment, streams and random stream.
pub struct WasiState {
    args: Strings,
    env: Strings,
    stdin: Stdin,
    stdout: Sink,
    stderr: Sink,
    random: blake3::OutputReader,
}

impl core::fmt::Debug for WasiState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WasiState")
            .field("args", &self.args.offsets.len())
            .field("env", &self.env.offsets.len())
            .finish_non_exhaustive()
    }
}

impl WasiState {
    /// The state `config` describes (arguments or variables with a NUL
    /// byte are refused).
    pub fn new(config: WasiConfig) -> Result<Self, WasmError> {
        let stdin = match config.stdin {
            WasiStdin::Empty => Stdin::Bytes {
                data: Vec::new(),
                at: 0,
            },
            WasiStdin::Bytes(data) => Stdin::Bytes { data, at: 0 },
            WasiStdin::Host => Stdin::Host,
        };
        Ok(Self {
            args: Strings::new(&config.args, "arguments")?,
            env: Strings::new(&config.env, "environment variables")?,
            stdin,
            stdout: Sink::new(1, config.stdout),
            stderr: Sink::new(2, config.stderr),
            random: blake3::Hasher::new_keyed(&config.seed).finalize_xof(),
        })
    }

    /// What stdout and stderr captured since the last take.
    pub fn take_output(&mut self) -> WasiCaptured {
        let truncated = self.stdout.truncated || self.stderr.truncated;
        self.stdout.truncated = false;
        self.stderr.truncated = false;
        WasiCaptured {
            stdout: core::mem::take(&mut self.stdout.captured),
            stderr: core::mem::take(&mut self.stderr.captured),
            truncated,
        }
    }

    fn sink(&mut self, fd: u32) -> Option<&mut Sink> {
        match fd {
            1 => Some(&mut self.stdout),
            2 => Some(&mut self.stderr),
            _ => None,
        }
    }

    /// Reads at most `max` bytes of stdin (`Ok(empty)`: end of file).
    fn read_stdin(&mut self, max: usize) -> Result<Vec<u8>, i32> {
        match &mut self.stdin {
            Stdin::Bytes { data, at } => {
                let rest = data.get(*at..).unwrap_or_default();
                let n = rest.len().min(max);
                let taken = rest.get(..n).unwrap_or_default().to_vec();
                *at = at.saturating_add(n);
                Ok(taken)
            }
            Stdin::Host => {
                let ask = u32::try_from(max.min(HOST_CHUNK)).unwrap_or(0);
                let request =
                    nub_interface::encode_args::<WasiRead>(&ask).map_err(|_| errno::IO)?;
                let reply = nub_arch_x86::host_call(nub_wasm_abi::WASI_READ_FN, &request)
                    .map_err(|_| errno::IO)?;
                match nub_interface::decode_reply::<WasiRead>(&reply) {
                    Ok(Ok(bytes)) if bytes.len() <= max => Ok(bytes.into_vec()),
                    _ => Err(errno::IO),
                }
            }
        }
    }
}

/// Linear memory as a handler sees it: every access checked.
struct Memory<'a>(Option<&'a mut [u8]>);

impl Memory<'_> {
    fn range(&self, ptr: u32, len: u32) -> Result<&[u8], i32> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(errno::FAULT)?;
        self.0
            .as_deref()
            .and_then(|m| m.get(start..end))
            .ok_or(errno::FAULT)
    }

    fn range_mut(&mut self, ptr: u32, len: usize) -> Result<&mut [u8], i32> {
        let start = ptr as usize;
        let end = start.checked_add(len).ok_or(errno::FAULT)?;
        self.0
            .as_deref_mut()
            .and_then(|m| m.get_mut(start..end))
            .ok_or(errno::FAULT)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), i32> {
        self.range_mut(ptr, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    fn u32_at(&self, ptr: u32) -> Result<u32, i32> {
        let bytes: [u8; 4] = self.range(ptr, 4)?.try_into().map_err(|_| errno::FAULT)?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The `(ptr, len)` pairs of an iovec array.
    fn iovecs(&self, iovs: u32, count: u32) -> Result<Vec<(u32, u32)>, i32> {
        if count > MAX_IOVECS {
            return Err(errno::INVAL);
        }
        (0..count)
            .map(|i| {
                let at = iovs.checked_add(i.checked_mul(8).ok_or(errno::FAULT)?);
                let at = at.ok_or(errno::FAULT)?;
                Ok((
                    self.u32_at(at)?,
                    self.u32_at(at.checked_add(4).ok_or(errno::FAULT)?)?,
                ))
            })
            .collect()
    }
}

/// What a handler works on.
struct Ctx<'a> {
    memory: Memory<'a>,
    wasi: &'a mut WasiState,
}

/// A handler's answer: the errno, or a wasmi error that ends the
/// execution (`proc_exit`).
type Answer = Result<i32, wasmi::Error>;

/// A handler: the call's parameters in (their types checked at link).
type Handler = fn(&mut Ctx<'_>, &Params<'_>) -> Answer;

/// A call's parameters, read by position (a missing or mistyped one reads
/// as 0, which link-time signature checks rule out).
struct Params<'a>(&'a [Val]);

impl Params<'_> {
    fn u32(&self, i: usize) -> u32 {
        match self.0.get(i) {
            Some(Val::I32(x)) => *x as u32,
            _ => 0,
        }
    }
}

/// Turns a handler's `Result<(), errno>` into its errno.
fn errno_of(r: Result<(), i32>) -> Answer {
    Ok(r.err().unwrap_or(errno::SUCCESS))
}

fn sizes_get(memory: &mut Memory<'_>, list: &Strings, count_ptr: u32, size_ptr: u32) -> Answer {
    let count = list.offsets.len() as u32;
    let size = list.bytes.len() as u32;
    errno_of(
        memory
            .write(count_ptr, &count.to_le_bytes())
            .and_then(|()| memory.write(size_ptr, &size.to_le_bytes())),
    )
}

fn strings_get(memory: &mut Memory<'_>, list: &Strings, ptrs: u32, buf: u32) -> Answer {
    let mut write = || -> Result<(), i32> {
        memory.write(buf, &list.bytes)?;
        for (i, offset) in list.offsets.iter().enumerate() {
            let slot = ptrs
                .checked_add(
                    u32::try_from(i)
                        .map_err(|_| errno::FAULT)?
                        .saturating_mul(4),
                )
                .ok_or(errno::FAULT)?;
            let at = buf.checked_add(*offset).ok_or(errno::FAULT)?;
            memory.write(slot, &at.to_le_bytes())?;
        }
        Ok(())
    };
    errno_of(write())
}

fn args_sizes_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    sizes_get(&mut cx.memory, &cx.wasi.args, p.u32(0), p.u32(1))
}

fn args_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    strings_get(&mut cx.memory, &cx.wasi.args, p.u32(0), p.u32(1))
}

fn environ_sizes_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    sizes_get(&mut cx.memory, &cx.wasi.env, p.u32(0), p.u32(1))
}

fn environ_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    strings_get(&mut cx.memory, &cx.wasi.env, p.u32(0), p.u32(1))
}

/// Realtime (0) and monotonic (1) are the host's; the CPU-time clocks (2,
/// 3) are not offered.
fn clock_known(id: u32) -> Result<(), i32> {
    match id {
        0 | 1 => Ok(()),
        2 | 3 => Err(errno::NOSYS),
        _ => Err(errno::INVAL),
    }
}

fn clock_res_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    errno_of(clock_known(p.u32(0)).and_then(|()| cx.memory.write(p.u32(1), &1u64.to_le_bytes())))
}

fn clock_time_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    let id = p.u32(0);
    let now = || -> Result<u64, i32> {
        clock_known(id)?;
        let request = nub_interface::encode_args::<WasiClock>(&id).map_err(|_| errno::IO)?;
        let reply = nub_arch_x86::host_call(nub_wasm_abi::WASI_CLOCK_FN, &request)
            .map_err(|_| errno::IO)?;
        match nub_interface::decode_reply::<WasiClock>(&reply) {
            Ok(Ok(ns)) => Ok(ns),
            _ => Err(errno::IO),
        }
    };
    // The time pointer is the third parameter (the second is the i64
    // precision, which is ignored).
    errno_of(now().and_then(|ns| cx.memory.write(p.u32(2), &ns.to_le_bytes())))
}

fn fd_write(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    let (fd, iovs, count, written_ptr) = (p.u32(0), p.u32(1), p.u32(2), p.u32(3));
    let mut write = || -> Result<(), i32> {
        let iovecs = cx.memory.iovecs(iovs, count)?;
        let mut bytes = Vec::new();
        for (ptr, len) in iovecs {
            bytes.extend_from_slice(cx.memory.range(ptr, len)?);
        }
        let written = u32::try_from(bytes.len()).map_err(|_| errno::INVAL)?;
        cx.wasi.sink(fd).ok_or(errno::BADF)?.write(&bytes)?;
        cx.memory.write(written_ptr, &written.to_le_bytes())
    };
    errno_of(write())
}

fn fd_read(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    let (fd, iovs, count, read_ptr) = (p.u32(0), p.u32(1), p.u32(2), p.u32(3));
    let mut read = || -> Result<(), i32> {
        if fd != 0 {
            return Err(errno::BADF);
        }
        let iovecs = cx.memory.iovecs(iovs, count)?;
        // Check every buffer before reading anything: a read that fails
        // must not consume input.
        for &(ptr, len) in &iovecs {
            cx.memory.range(ptr, len)?;
        }
        let room = iovecs
            .iter()
            .fold(0usize, |n, (_, len)| n.saturating_add(*len as usize));
        let bytes = cx.wasi.read_stdin(room)?;
        let mut rest = &bytes[..];
        for (ptr, len) in iovecs {
            let n = rest.len().min(len as usize);
            let (now, later) = rest.split_at(n);
            cx.memory.write(ptr, now)?;
            rest = later;
        }
        let read = u32::try_from(bytes.len()).map_err(|_| errno::INVAL)?;
        cx.memory.write(read_ptr, &read.to_le_bytes())
    };
    errno_of(read())
}

fn fd_fdstat_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    let rights = match p.u32(0) {
        0 => RIGHT_FD_READ,
        1 | 2 => RIGHT_FD_WRITE,
        _ => return Ok(errno::BADF),
    };
    // fdstat: filetype u8, flags u16 at 2, rights_base u64 at 8,
    // rights_inheriting u64 at 16.
    let mut stat = [0u8; 24];
    stat[0] = CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    errno_of(cx.memory.write(p.u32(1), &stat))
}

fn fd_filestat_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    if p.u32(0) > 2 {
        return Ok(errno::BADF);
    }
    // filestat: dev, ino (u64 each), filetype u8 at 16, then nlink, size,
    // atim, mtim, ctim: all zero for a character device.
    let mut stat = [0u8; 64];
    stat[16] = CHARACTER_DEVICE;
    errno_of(cx.memory.write(p.u32(1), &stat))
}

fn random_get(cx: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    let random = &mut cx.wasi.random;
    errno_of(
        cx.memory
            .range_mut(p.u32(0), p.u32(1) as usize)
            .map(|buf| random.fill(buf)),
    )
}

fn proc_exit(_: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    Err(wasmi::Error::i32_exit(p.u32(0) as i32))
}

fn sched_yield(_: &mut Ctx<'_>, _: &Params<'_>) -> Answer {
    Ok(errno::SUCCESS)
}

/// Not offered.
fn nosys(_: &mut Ctx<'_>, _: &Params<'_>) -> Answer {
    Ok(errno::NOSYS)
}

/// An operation on the descriptor in the first parameter that stdio does
/// not offer (`ENOSYS`); any other descriptor does not exist (`EBADF`).
fn stdio_nosys(_: &mut Ctx<'_>, p: &Params<'_>) -> Answer {
    Ok(if p.u32(0) <= 2 {
        errno::NOSYS
    } else {
        errno::BADF
    })
}

/// No descriptor can name a directory or a socket: `EBADF`.
fn badf(_: &mut Ctx<'_>, _: &Params<'_>) -> Answer {
    Ok(errno::BADF)
}

use ValType::{I32, I64};

/// One WASI function: its name, parameters (every one returns an errno
/// `i32`, except `proc_exit`) and handler.
struct Function {
    name: &'static str,
    params: &'static [ValType],
    returns: bool,
    handler: Handler,
}

const fn f(name: &'static str, params: &'static [ValType], handler: Handler) -> Function {
    Function {
        name,
        params,
        returns: true,
        handler,
    }
}

/// Every function of `wasi_snapshot_preview1`.
const FUNCTIONS: &[Function] = &[
    f("args_get", &[I32, I32], args_get),
    f("args_sizes_get", &[I32, I32], args_sizes_get),
    f("environ_get", &[I32, I32], environ_get),
    f("environ_sizes_get", &[I32, I32], environ_sizes_get),
    f("clock_res_get", &[I32, I32], clock_res_get),
    f("clock_time_get", &[I32, I64, I32], clock_time_get),
    f("fd_advise", &[I32, I64, I64, I32], stdio_nosys),
    f("fd_allocate", &[I32, I64, I64], stdio_nosys),
    f("fd_close", &[I32], stdio_nosys),
    f("fd_datasync", &[I32], stdio_nosys),
    f("fd_fdstat_get", &[I32, I32], fd_fdstat_get),
    f("fd_fdstat_set_flags", &[I32, I32], stdio_nosys),
    f("fd_fdstat_set_rights", &[I32, I64, I64], stdio_nosys),
    f("fd_filestat_get", &[I32, I32], fd_filestat_get),
    f("fd_filestat_set_size", &[I32, I64], stdio_nosys),
    f("fd_filestat_set_times", &[I32, I64, I64, I32], stdio_nosys),
    f("fd_pread", &[I32, I32, I32, I64, I32], stdio_nosys),
    f("fd_prestat_get", &[I32, I32], badf),
    f("fd_prestat_dir_name", &[I32, I32, I32], badf),
    f("fd_pwrite", &[I32, I32, I32, I64, I32], stdio_nosys),
    f("fd_read", &[I32, I32, I32, I32], fd_read),
    f("fd_readdir", &[I32, I32, I32, I64, I32], stdio_nosys),
    f("fd_renumber", &[I32, I32], stdio_nosys),
    f("fd_seek", &[I32, I64, I32, I32], stdio_nosys),
    f("fd_sync", &[I32], stdio_nosys),
    f("fd_tell", &[I32, I32], stdio_nosys),
    f("fd_write", &[I32, I32, I32, I32], fd_write),
    f("path_create_directory", &[I32, I32, I32], badf),
    f("path_filestat_get", &[I32, I32, I32, I32, I32], badf),
    f(
        "path_filestat_set_times",
        &[I32, I32, I32, I32, I64, I64, I32],
        badf,
    ),
    f("path_link", &[I32, I32, I32, I32, I32, I32, I32], badf),
    f(
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        badf,
    ),
    f("path_readlink", &[I32, I32, I32, I32, I32, I32], badf),
    f("path_remove_directory", &[I32, I32, I32], badf),
    f("path_rename", &[I32, I32, I32, I32, I32, I32], badf),
    f("path_symlink", &[I32, I32, I32, I32, I32], badf),
    f("path_unlink_file", &[I32, I32, I32], badf),
    f("poll_oneoff", &[I32, I32, I32, I32], nosys),
    Function {
        name: "proc_exit",
        params: &[I32],
        returns: false,
        handler: proc_exit,
    },
    f("proc_raise", &[I32], nosys),
    f("sched_yield", &[], sched_yield),
    f("random_get", &[I32, I32], random_get),
    f("sock_accept", &[I32, I32, I32], badf),
    f("sock_recv", &[I32, I32, I32, I32, I32, I32], badf),
    f("sock_send", &[I32, I32, I32, I32, I32], badf),
    f("sock_shutdown", &[I32, I32], badf),
];

/// Why a WASI import cannot be linked, or `None` when `name` with type
/// `ty` is one this module defines.
fn check(name: &str, ty: &FuncType) -> Result<&'static Function, &'static str> {
    let function = FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .ok_or("not a wasi_snapshot_preview1 function")?;
    let results: &[ValType] = if function.returns { &[I32] } else { &[] };
    if ty.params() != function.params || ty.results() != results {
        return Err("its type is not the wasi_snapshot_preview1 one");
    }
    Ok(function)
}

/// Defines the WASI function import `name` of type `ty` in `linker`.
pub fn define<T: WasiData + 'static>(
    linker: &mut Linker<T>,
    name: &str,
    ty: &FuncType,
) -> Result<(), WasmError> {
    let link_error = |reason: &str| WasmError::Link {
        module: MODULE.into(),
        name: name.into(),
        reason: reason.into(),
    };
    let handler = check(name, ty).map_err(link_error)?.handler;
    linker
        .func_new(
            MODULE,
            name,
            ty.clone(),
            move |mut caller, params, results| {
                let answer = with_ctx(&mut caller, |cx| handler(cx, &Params(params)))?;
                if let Some(slot) = results.first_mut() {
                    *slot = Val::I32(answer);
                }
                Ok(())
            },
        )
        .map(drop)
        .map_err(|e| link_error(&alloc::string::ToString::to_string(&e)))
}

/// Runs `f` over the caller's exported `memory` (none: every access is
/// `EFAULT`) and its instance's WASI state.
fn with_ctx<T: WasiData>(
    caller: &mut Caller<'_, T>,
    f: impl FnOnce(&mut Ctx<'_>) -> Answer,
) -> Answer {
    let memory = caller.get_export("memory").and_then(Extern::into_memory);
    let (bytes, data) = match memory {
        Some(memory) => {
            let (bytes, data) = memory.data_and_store_mut(caller);
            (Some(bytes), data)
        }
        None => (None, caller.data_mut()),
    };
    match data.wasi() {
        Some(wasi) => f(&mut Ctx {
            memory: Memory(bytes),
            wasi,
        }),
        // Defined only for instances with WASI state.
        None => Ok(errno::NOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(stdin: WasiStdin) -> WasiState {
        WasiState::new(WasiConfig {
            args: alloc::vec!["prog".into(), "a b".into()],
            env: alloc::vec!["K=V".into()],
            stdin,
            stdout: WasiOutput::Capture { limit: 8 },
            stderr: WasiOutput::Discard,
            seed: [7; 32],
        })
        .unwrap()
    }

    fn run(wasi: &mut WasiState, mem: &mut [u8], h: Handler, params: &[Val]) -> i32 {
        let mut cx = Ctx {
            memory: Memory(Some(mem)),
            wasi,
        };
        h(&mut cx, &Params(params)).unwrap()
    }

    fn i(x: i32) -> Val {
        Val::I32(x)
    }

    #[test]
    fn args_are_laid_out_nul_terminated_with_pointers() {
        let mut w = state(WasiStdin::Empty);
        let mut mem = [0u8; 64];
        assert_eq!(run(&mut w, &mut mem, args_sizes_get, &[i(0), i(4)]), 0);
        assert_eq!(&mem[..8], &[2, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(run(&mut w, &mut mem, args_get, &[i(0), i(16)]), 0);
        assert_eq!(&mem[..8], &[16, 0, 0, 0, 21, 0, 0, 0]);
        assert_eq!(&mem[16..25], b"prog\0a b\0");
        // Out of bounds is EFAULT, not a panic.
        assert_eq!(
            run(&mut w, &mut mem, args_get, &[i(0), i(60)]),
            errno::FAULT
        );
        assert_eq!(
            run(&mut w, &mut mem, args_get, &[i(-4), i(0)]),
            errno::FAULT
        );
    }

    #[test]
    fn writes_are_captured_up_to_the_limit_and_bad_fds_are_badf() {
        let mut w = state(WasiStdin::Empty);
        let mut mem = [0u8; 64];
        mem[32..38].copy_from_slice(b"hello!");
        // Two iovecs at 0: (32, 3) and (35, 3).
        mem[..16].copy_from_slice(&[32, 0, 0, 0, 3, 0, 0, 0, 35, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(
            run(&mut w, &mut mem, fd_write, &[i(1), i(0), i(2), i(20)]),
            0
        );
        assert_eq!(&mem[20..24], &[6, 0, 0, 0]);
        assert_eq!(
            run(&mut w, &mut mem, fd_write, &[i(1), i(0), i(2), i(20)]),
            0
        );
        let out = w.take_output();
        assert_eq!(out.stdout, b"hello!he");
        assert!(out.truncated);
        assert_eq!(
            run(&mut w, &mut mem, fd_write, &[i(5), i(0), i(2), i(20)]),
            errno::BADF
        );
        // An iovec past the end of memory.
        mem[..8].copy_from_slice(&[60, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(
            run(&mut w, &mut mem, fd_write, &[i(1), i(0), i(1), i(20)]),
            errno::FAULT
        );
        assert_eq!(
            run(&mut w, &mut mem, fd_write, &[i(1), i(0), i(5000), i(20)]),
            errno::INVAL
        );
    }

    #[test]
    fn stdin_bytes_are_read_across_iovecs_then_eof() {
        let mut w = state(WasiStdin::Bytes(b"abcde".to_vec()));
        let mut mem = [0u8; 64];
        mem[..16].copy_from_slice(&[32, 0, 0, 0, 2, 0, 0, 0, 40, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            run(&mut w, &mut mem, fd_read, &[i(0), i(0), i(2), i(20)]),
            0
        );
        assert_eq!(
            (&mem[32..34], &mem[40..42], mem[20]),
            (&b"ab"[..], &b"cd"[..], 4)
        );
        assert_eq!(
            run(&mut w, &mut mem, fd_read, &[i(0), i(0), i(2), i(20)]),
            0
        );
        assert_eq!((mem[32], mem[20]), (b'e', 1));
        assert_eq!(
            run(&mut w, &mut mem, fd_read, &[i(0), i(0), i(2), i(20)]),
            0
        );
        assert_eq!(mem[20], 0);
        assert_eq!(
            run(&mut w, &mut mem, fd_read, &[i(1), i(0), i(2), i(20)]),
            errno::BADF
        );
    }

    #[test]
    fn random_bytes_follow_the_seed() {
        let draw = |seed: [u8; 32]| {
            let mut w = WasiState::new(WasiConfig {
                seed,
                ..config_empty()
            })
            .unwrap();
            let mut mem = [0u8; 16];
            assert_eq!(run(&mut w, &mut mem, random_get, &[i(0), i(16)]), 0);
            mem
        };
        assert_eq!(draw([1; 32]), draw([1; 32]));
        assert_ne!(draw([1; 32]), draw([2; 32]));
    }

    fn config_empty() -> WasiConfig {
        WasiConfig {
            args: Vec::new(),
            env: Vec::new(),
            stdin: WasiStdin::Empty,
            stdout: WasiOutput::Discard,
            stderr: WasiOutput::Discard,
            seed: [0; 32],
        }
    }

    #[test]
    fn nul_bytes_in_arguments_are_refused_and_signatures_are_checked() {
        let bad = WasiConfig {
            args: alloc::vec!["a\0b".into()],
            ..config_empty()
        };
        assert!(matches!(
            WasiState::new(bad),
            Err(WasmError::Instantiate(_))
        ));
        let good = FuncType::new([I32, I32], [I32]);
        assert!(check("args_get", &good).is_ok());
        assert!(check("args_get", &FuncType::new([I32], [I32])).is_err());
        assert!(check("no_such_fn", &good).is_err());
        assert!(check("proc_exit", &FuncType::new([I32], [])).is_ok());
    }
}
