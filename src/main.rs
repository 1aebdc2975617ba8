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
    // A signal ends the command inside cli::run, which records the run and says so.
    let code = match runtime.block_on(archfarm::cli::run(cli)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {}", e.message());
            e.exit_code()
        }
    };
    std::process::exit(code);
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
