//! The `ssmkit` command line: its types ([`args`]) and one function per subcommand
//! ([`commands`]).

pub mod args;
pub mod commands;
