//! Reports: PNG plots and an HTML report (later issues).
