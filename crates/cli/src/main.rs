//! The `strongroom` binary: parses the command line and runs a subcommand. Everything else lives in
//! the library so tests drive the same code.

use clap::Parser;

fn main() {
    let cli = strongroom::commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
