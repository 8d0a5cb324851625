//! `nub`: run functions of a `no_std` guest program inside a KVM micro-VM
//! from the command line.
//!
//! ```text
//! nub call 1 --data hello          # boot the built-in guest, call fn 1 (echo)
//! nub call 4 --file input.bin      # blake3 of a file, computed in the guest
//! nub call 2 --hex 0500000000000000 --repeat 3
//! nub info --guest path/to/guest   # ELF segments and the memory map
//! nub new my-guest                 # a guest crate of one's own
//! nub build my-guest               # build it; prints the ELF's path
//! nub call --guest my-guest 1 --data hi -v   # build, boot, call, show its logs
//! nub image save -o c.img --call 2 --hex 0500000000000000   # set up, save
//! nub call --image c.img 2 --hex 0100000000000000   # no boot: prints 0600000000000000
//! nub info --image c.img           # what the image holds (no KVM)
//! nub bench --quick --json out.json   # latencies next to their floors (about 20 s)
//! nub wasm run hello.wasm a b      # a WASI program; exits with its code
//! nub wasm call math.wasm add 2 40 # one export of a module: prints 42
//! ```
//!
//! Without `--guest`, `nub` uses the default guest, which its build script
//! builds and this binary embeds; `--guest` takes an ELF or a guest crate
//! directory. `call` registers a few host functions (see [`nub_cli::host_fns`]).
//! Every command that boots a guest or starts one from an image needs
//! `/dev/kvm`. Errors go to stderr as `error: ...` and the exit status is 1
//! (2 for a bad command line).

#![deny(unsafe_op_in_unsafe_fn)]

mod bench;
mod build_guest;
mod call;
mod cli;
mod error;
mod guest;
mod image;
mod info;
mod new;
mod output;
mod payload;
mod size;
mod table;
mod wasm;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Image(args) => image::run(&args),
        Command::New(args) => new::run(&args),
        Command::Build(args) => build_guest::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Wasm(args) => match wasm::run(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
