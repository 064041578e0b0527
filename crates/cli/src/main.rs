//! The `strongroom` binary: parses the command line and runs a subcommand. Everything else lives in
//! the library so tests drive the same code.

use clap::Parser;

/// mimalloc: request handling allocates many small, short-lived objects, where glibc's malloc
/// spent about a seventh of the CPU time in profiles of `GET /v1/merchant` (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = strongroom::commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(strongroom::commands::run(cli));
    drop(runtime);
    std::process::exit(code);
}
