//! The archfarm binary: parse arguments, run, map the outcome to an exit code
//! (0 ok, 1 a build or push failed, 2 bad usage or configuration).

use clap::Parser;

fn main() {
    let cli = match archfarm::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            r = archfarm::cli::run(cli) => match r {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("error: {}", e.message());
                    e.exit_code()
                }
            },
            _ = tokio::signal::ctrl_c() => {
                // Every store write is atomic and tags are written last, so stopping here
                // leaves no half-written entry and no tag over an incomplete image.
                eprintln!("interrupted");
                130
            }
        }
    });
    std::process::exit(code);
}
