//! `cargo run -p codegen`: regenerates `proxy-api/src/generated/` from `proto/`.
//! Run it after any change to a `.proto` file and commit the result.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(codegen::GENERATED_DIR);
    match codegen::generate(&root.join("proto")).and_then(|out| {
        out.write(&dir).map_err(|source| codegen::Error::Io {
            path: dir.clone(),
            source,
        })
    }) {
        Ok(()) => {
            eprintln!("wrote {}", codegen::GENERATED_DIR);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
