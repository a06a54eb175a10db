//! The `ssmkit` command line: parse, then call one library function per subcommand
//! (`cli::commands`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a closed pipe (`ssmkit train --dry-run | head -1`) turns
    // every later print into a panic. Like any filter, end quietly instead.
    #[cfg(unix)]
    // SAFETY: called once, before any other thread starts; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match cli::commands::run(cli::args::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: an error that already quotes its source is not followed by it.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&cause);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
