//! SLURM-friendly signal handling: SIGTERM / SIGUSR1 / SIGINT set a flag; work stops at the
//! next unit boundary (a tilt series), completed work is on disk, and `--resume` continues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Install the handlers (idempotent). Returns the shared stop flag.
pub fn install() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        for sig in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGUSR1,
            signal_hook::consts::SIGINT,
        ] {
            // registering can only fail for forbidden signals; these are allowed
            let _ = signal_hook::flag::register(sig, Arc::clone(&f));
        }
        f
    })
    .clone()
}

/// True once a stop signal has arrived.
pub fn stop_requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Request a stop from inside the program (tests, fatal errors on another rank).
pub fn request_stop() {
    install().store(true, Ordering::Relaxed);
}
