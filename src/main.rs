//! The archfarm binary: parse arguments, run, map the outcome to an exit code
//! (0 ok, 1 a build or push failed, 2 bad usage or configuration; stopped by a signal:
//! 128 + its number, as shells report it: 130 for Ctrl-C, 143 for SIGTERM).

use clap::Parser;

fn main() {
    let cli = match archfarm::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(e) = init_logging(cli.verbose) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
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
            signal = stop_signal() => {
                // Every store write is atomic and tags are written last, so stopping here
                // leaves no half-written entry and no tag over an incomplete image.
                eprintln!("interrupted");
                128 + signal as i32
            }
        }
    });
    std::process::exit(code);
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM and says which came.
async fn stop_signal() -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::SIGINT,
                _ = term.recv() => Signal::SIGTERM,
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            Signal::SIGINT
        }
    }
}

/// Diagnostics on stderr: warnings by default, archfarm's debug lines with -v;
/// ARCHFARM_LOG (an env-filter directive such as `archfarm=trace`) overrides both, and
/// one that does not parse is refused, naming the variable.
fn init_logging(verbose: bool) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let default = if verbose { "archfarm=debug,warn" } else { "warn" };
    let filter = match std::env::var("ARCHFARM_LOG").ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => EnvFilter::try_new(&v).map_err(|e| {
            format!("environment variable ARCHFARM_LOG={v:?} is not valid: {e}; expected directives such as warn or archfarm=debug")
        })?,
        None => EnvFilter::new(default),
    };
    // Colours only on a terminal: logs captured by CI or redirected to a file stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    Ok(())
}
