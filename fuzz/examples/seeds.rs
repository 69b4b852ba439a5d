//! Writes the seed corpora: `cargo run --example seeds -- DIR` (in `fuzz/`)
//! writes `DIR/<target>/seed-*` for every target.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: seeds DIR");
        return ExitCode::from(2);
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match fuzz::seeds::write_all(&repo, &out) {
        Ok(n) => {
            eprintln!("wrote {n} seeds under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
