use clap::Parser;

use kennel::cli::{Cli, Command};
use kennel::exit_code;

fn main() {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { exit_code::USAGE } else { exit_code::CLEAN });
        }
    };
    let code = match cli.command {
        Command::Run(args) => match kennel::run::run(*args) {
            Ok(code) => code,
            Err(e) => {
                kennel::host::terminal::restore();
                eprintln!("kennel: {e}");
                e.exit_code()
            }
        },
        Command::Timeline { input, output } => match kennel::interfaces::timeline::run(&input, &output) {
            Ok(()) => exit_code::CLEAN,
            Err(e) => {
                eprintln!("kennel: {e}");
                exit_code::HOST_ERROR
            }
        },
    };
    kennel::host::terminal::restore();
    std::process::exit(code);
}

/// Log lines go to stderr so the guest console on stdout stays clean.
fn init_logging() {
    let level = std::env::var("KENNEL_LOG").unwrap_or_else(|_| "info".into());
    let level = level.parse().unwrap_or(log::LevelFilter::Info);
    log::set_max_level(level);
    let _ = log::set_logger(&LOGGER);
}

struct StderrLogger;
static LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            eprintln!("[{}.{:06} kennel {}] {}", t.as_secs(), t.subsec_micros(), r.level(), r.args());
        }
    }
    fn flush(&self) {}
}
