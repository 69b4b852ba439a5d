//! proxy-api's build script: a guard, not a generator. The stage contract is
//! generated from `proto/` by `cargo run -p codegen` and committed under
//! `proxy-api/src/generated/`, so readers and tools can follow every call.
//! This script regenerates it in memory whenever `proto/` or the committed
//! files change and stops the build, saying how to fix it, when they differ.

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("proxy-api sits one level below the workspace root")?
        .to_path_buf();
    let proto = root.join("proto");
    let generated = root.join(codegen::GENERATED_DIR);
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed={}", generated.display());
    let fresh = codegen::generate(&proto)?;
    let stale = fresh.stale_in(&generated);
    anyhow::ensure!(
        stale.is_empty(),
        "{} is out of date with proto/ ({}): run `cargo run -p codegen` and commit the result",
        codegen::GENERATED_DIR,
        stale.join(", ")
    );
    Ok(())
}
