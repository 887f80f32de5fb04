//! The `lamella` binary: parse the command line, start logging and the communicator,
//! dispatch. Nothing else lives here.

use clap::Parser;
use lamella::cli::{self, Cli};

fn main() {
    // Files are made safe by write-to-`.partial`-and-rename, not by HDF5's flock: switch the
    // lock off (unless the user chose) so Lustre/GPFS mounts without flock work and a reader
    // never trips over a lock. Set before any thread or HDF5 call exists.
    if std::env::var_os("HDF5_USE_FILE_LOCKING").is_none() {
        std::env::set_var("HDF5_USE_FILE_LOCKING", "FALSE");
    }
    let args = Cli::parse();
    let comm = lamella::comm::init();
    let _span = cli::logging::init(args.log_format, args.verbose, comm.rank(), comm.size());
    cli::init_threads(args.threads, comm.as_ref());
    let code = match cli::dispatch(&args, comm.as_ref()) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<lamella::Error>()
                .map(|le| le.exit_code())
                .unwrap_or(4);
            eprintln!("lamella: error: {e:#}");
            code
        }
    };
    drop(comm);
    std::process::exit(code);
}
