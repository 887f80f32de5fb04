//! Command-line interface (clap), one file per subcommand.
