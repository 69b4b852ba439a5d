//! Compiles `proto/` without a system protoc (protox), emits prost messages and
//! tonic client/server code, and, through the `codegen` crate, the stage traits,
//! adapters and registry. Used as the build script of `proxy-api`.

use std::path::PathBuf;

use anyhow::Context as _;
use prost::Message as _;

/// The stages, in chain order (a caller before its callee). Adding a stage
/// means adding its `.proto` file here.
const STAGES: &[&str] = &["business", "split", "rerank", "finerank", "recall"];

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("proxy-api sits one level below the workspace root")?
        .to_path_buf();
    let proto = root.join("proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", proto.display());

    let files: Vec<PathBuf> = STAGES
        .iter()
        .map(|s| proto.join(format!("feeds/v1/{s}.proto")))
        .collect();
    let fds = protox::compile(&files, [&proto]).context("compiling proto/")?;
    // Kept whole so reflection can be served from it.
    std::fs::write(out.join("feeds_descriptor.bin"), fds.encode_to_vec())?;

    let tonic = tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .service_generator();
    let generated = codegen::Generated::default();
    let paths = codegen::Paths {
        pb: "crate::pb".into(),
        runtime: "crate".into(),
    };
    let mut config = prost_build::Config::new();
    config
        .btree_map(["."])
        .out_dir(&out)
        .service_generator(Box::new(codegen::StageGenerator::new(
            tonic,
            paths.clone(),
            generated.clone(),
        )));
    config
        .compile_fds(fds)
        .context("generating Rust from proto/")?;

    let keys = generated.stage_keys();
    anyhow::ensure!(
        keys == STAGES,
        "proto services {keys:?} must match the stage list {STAGES:?} (one service per stage file)"
    );
    std::fs::write(out.join("stages.rs"), generated.render(&paths))?;
    Ok(())
}
