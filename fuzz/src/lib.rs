//! What the fuzz targets share: the in-process monolith on a small world
//! (built once per process, called through the registry's local stubs),
//! scratch directories that a target fills with files made from its input,
//! and the packing of several files into one input.
//!
//! # Layout
//! - [`Handlers`]: the registry every handler target calls, with a runtime
//!   and a deadline per call.
//! - [`scratch`], [`write_files`]: per-process directories in memory
//!   (`/dev/shm`) that the loader targets write their files into.
//! - [`pack`], [`unpack`]: several files in one input, separated by [`MARK`].
//! - [`small_world`], [`I2I_NEIGHBOURS`], [`HNSW_PARAMS`]: the fixed data
//!   the index loader targets check their files against.
//! - [`seeds`]: the seed corpora, written from the project's own code.

pub mod seeds;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proxy_api::{Cx, Registry};

/// Items of the world the handler targets serve: big enough that every
/// channel, cap and category matters, small enough to build in a second.
pub const HANDLER_ITEMS: u32 = 2_000;
/// Users of that world (ids `0..200` are known users, others cold).
pub const HANDLER_USERS: u32 = 200;
/// Deadline of every handler call: far above a normal call on this world,
/// so only an input that makes a stage spin reaches it (and libFuzzer's
/// `-timeout` catches what does not check it).
pub const DEADLINE: Duration = Duration::from_secs(2);

/// The monolith registry on the small world, and the runtime its calls run on.
pub struct Handlers {
    /// Every stage bound `local`, built as `feeds serve` builds it.
    pub registry: Registry,
    /// A single-threaded runtime: the calls are in-process, nothing to spread.
    runtime: tokio::runtime::Runtime,
}

impl Handlers {
    /// The process's handlers, built on first use.
    pub fn get() -> &'static Handlers {
        static HANDLERS: OnceLock<Handlers> = OnceLock::new();
        HANDLERS.get_or_init(|| Self::build().unwrap_or_else(|e| panic!("fuzz setup: {e}")))
    }

    fn build() -> Result<Handlers, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut config = feeds::Config::default();
        config.world.items = HANDLER_ITEMS;
        config.world.users = HANDLER_USERS;
        let plan = config.validate().map_err(|e| e.to_string())?;
        let registry = {
            let _entered = runtime.enter();
            feeds::build(&config, &plan).map_err(|e| e.to_string())?
        };
        Ok(Handlers { registry, runtime })
    }

    /// Runs one call with a fresh context carrying [`DEADLINE`].
    pub fn call<'a, F, T>(&'a self, call: impl FnOnce(Cx) -> F) -> T
    where
        F: Future<Output = T> + 'a,
    {
        let cx = Cx::new().with_timeout(DEADLINE).with_request_id("fuzz");
        self.runtime.block_on(call(cx))
    }
}

/// A directory of this process's own, `tandem-fuzz-<prefix>-<pid>`, in
/// memory (`/dev/shm`) where there is one, else in the system temporary
/// directory: the loader targets write files on every run, and on a disk
/// that costs milliseconds. Directories left by processes that have ended
/// are removed first, so runs that are killed leave nothing behind for long.
pub fn scratch(prefix: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("tandem-fuzz-"))
            .and_then(|n| n.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("tandem-fuzz-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("fuzz setup: {}: {e}", dir.display()));
    dir
}

/// Writes `parts[i]` as `dir/names[i]`; a name with no part is removed, so
/// an input can also leave a file out.
pub fn write_files(dir: &Path, names: &[&str], parts: &[&[u8]]) {
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        match parts.get(i) {
            Some(bytes) => std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("fuzz setup: {}: {e}", path.display())),
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("fuzz setup: {}: {e}", path.display()),
            },
        }
    }
}

/// Separates the files packed into one input.
pub const MARK: &[u8] = b"\n%%tandem-fuzz-file%%\n";

/// The files packed in `data`, in order.
pub fn unpack(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        parts.push(&rest[..at]);
        rest = &rest[at + MARK.len()..];
    }
    parts.push(rest);
    parts
}

/// `parts` as one input; [`unpack`] gives them back unless a part holds [`MARK`].
pub fn pack(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(MARK)
}

/// The world the index loader targets check manifests against (the HNSW
/// and i2i loaders compare a manifest with the world they serve).
pub fn small_world() -> Arc<world::World> {
    static WORLD: OnceLock<Arc<world::World>> = OnceLock::new();
    WORLD
        .get_or_init(|| {
            Arc::new(world::World::generate(&world::WorldConfig {
                items: 200,
                users: 10,
                categories: 4,
                creators: 20,
                dims: 8,
                ..world::WorldConfig::default()
            }))
        })
        .clone()
}

/// Neighbours per item of the i2i tables the i2i target loads.
pub const I2I_NEIGHBOURS: usize = 4;

/// The HNSW index's manifest inside its directory.
pub const HNSW_MANIFEST: &str = "index.json";

/// Parameters of the HNSW index the manifest target loads.
pub const HNSW_PARAMS: recall::IndexParams = recall::IndexParams {
    m: 4,
    ef_construction: 16,
    ef_search: 16,
    shards: 2,
};
