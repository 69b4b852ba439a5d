//! Code generator for the stage contract: compiles `proto/` (protox, no system
//! protoc) and emits prost messages with tonic's client and server modules,
//! plus, for every service, the transport-agnostic stage trait, its adapters
//! and its registry slot. The output is committed under
//! `proxy-api/src/generated/`; `cargo run -p codegen` rewrites it.
//!
//! # Layout
//! - [`generate`]: proto directory in, [`Output`] (three files) out.
//! - [`StageGenerator`]: the `prost_build::ServiceGenerator` wrapping tonic's;
//!   it records every service so the stage code can be emitted once all are known.
//! - `emit` (private): the stage code, written with `quote!` and formatted with
//!   `prettyplease`.
//! - `graph` (private): the call graph, read from each service's `Calls:` line.
//! - `carrier` (private): the messages that carry a pass-through field (the
//!   user context), written with their own `prost::Message` impl so the
//!   field travels undecoded.

mod carrier;
mod emit;
mod graph;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use prost::Message as _;
use prost_build::Service;

/// Where the committed output lives, relative to the workspace root.
pub const GENERATED_DIR: &str = "proxy-api/src/generated";

/// The proto package every stage service belongs to, as a directory.
pub const PACKAGE_DIR: &str = "feeds/v1";

/// What [`generate`] produces: the three committed files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// `feeds.v1.rs`: prost messages and tonic's client/server modules.
    pub pb: String,
    /// `stages.rs`: traits, adapters, `Stage`, `Registry`.
    pub stages: String,
    /// `feeds_descriptor.bin`: the encoded `FileDescriptorSet`, for reflection.
    pub descriptor: Vec<u8>,
}

impl Output {
    /// The files as (name, bytes), in a fixed order.
    pub fn files(&self) -> [(&'static str, &[u8]); 3] {
        [
            ("feeds.v1.rs", self.pb.as_bytes()),
            ("stages.rs", self.stages.as_bytes()),
            ("feeds_descriptor.bin", &self.descriptor),
        ]
    }

    /// Writes the files into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in self.files() {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// Names of the files in `dir` that differ from this output (or are missing).
    pub fn stale_in(&self, dir: &Path) -> Vec<String> {
        self.files()
            .into_iter()
            .filter(|(name, bytes)| std::fs::read(dir.join(name)).ok().as_deref() != Some(*bytes))
            .map(|(name, _)| name.to_owned())
            .collect()
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proto directory cannot be listed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// protox rejected the protos.
    #[error("compiling proto/: {0}")]
    Compile(String),
    /// prost or tonic failed to generate.
    #[error("generating Rust from proto/: {0}")]
    Generate(String),
    /// A service breaks a rule of the stage contract.
    #[error("{0}")]
    Contract(String),
    /// The emitted code does not parse (a generator bug).
    #[error("emitted code does not parse: {0}")]
    Format(String),
}

/// Compiles every `.proto` under `<proto_root>/feeds/v1/` and generates the
/// three committed files.
pub fn generate(proto_root: &Path) -> Result<Output, Error> {
    let dir = proto_root.join(PACKAGE_DIR);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    let fds = protox::compile(&files, [proto_root]).map_err(|e| Error::Compile(e.to_string()))?;
    let descriptor = fds.encode_to_vec();

    let out = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let services = Services::default();
    let tonic = tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .service_generator();
    let pass = carrier::pass_through_types(&fds);
    let carriers = carrier::carriers(&fds, &pass);
    let mut config = prost_build::Config::new();
    for c in &carriers {
        // prost skips a type with an extern path; `carrier` writes it.
        config.extern_path(&c.proto, format!("crate::pb::{}", c.rust));
    }
    config
        .btree_map(["."])
        // `bytes` fields (the user context's blob) as `Bytes`: a stage that
        // decodes a received context slices them instead of copying.
        .bytes(["."])
        .out_dir(out.path())
        .service_generator(Box::new(StageGenerator {
            tonic,
            services: services.clone(),
        }));
    config
        .compile_fds(fds.clone())
        .map_err(|e| Error::Generate(e.to_string()))?;
    let pb_path = out.path().join("feeds.v1.rs");
    let mut pb = std::fs::read_to_string(&pb_path).map_err(io(&pb_path))?;
    let mut carried = Vec::new();
    for c in &carriers {
        carried.push(carrier::emit(c, &pass)?);
    }
    if !carried.is_empty() {
        let file: syn::File = syn::parse2(quote::quote!(#(#carried)*))
            .map_err(|e| Error::Format(format!("{e} (at {:?})", e.span())))?;
        pb.push_str(&prettyplease::unparse(&file));
    }

    let services = services.0.borrow().clone();
    let stages = emit::stages(&services, &fds)?;
    Ok(Output {
        pb,
        stages,
        descriptor,
    })
}

/// Services collected while prost runs.
#[derive(Clone, Debug, Default)]
struct Services(Rc<RefCell<Vec<Service>>>);

/// Wraps tonic's generator and records every service for the stage code.
pub struct StageGenerator {
    /// tonic's own generator: client and server modules.
    tonic: Box<dyn prost_build::ServiceGenerator>,
    /// Where the services go.
    services: Services,
}

impl prost_build::ServiceGenerator for StageGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        self.services.0.borrow_mut().push(service.clone());
        self.tonic.generate(service, buf);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.tonic.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.tonic.finalize_package(package, buf);
    }
}
