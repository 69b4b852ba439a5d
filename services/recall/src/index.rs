//! The ANN index over item embeddings (HNSW, from the `hnsw_rs` crate).
//!
//! The items are dealt into `shards` (item `i` goes to shard `i % shards`);
//! each shard is its own HNSW graph, built by inserting its items one at a
//! time in id order. `hnsw_rs` draws layer levels from a fixed-seed
//! generator, so the same world and parameters always give the same graphs,
//! and a recall pod answers exactly as the monolith does. The shards are
//! built side by side, one thread each (up to the cores there are), which is
//! what makes start-up fast; a search asks every shard and merges.
//!
//! A built index can be written next to the world files ([`AnnIndex::save`])
//! and loaded back ([`AnnIndex::load`]): large catalogues are built once,
//! offline, by `feeds world --out`.

use std::path::{Path, PathBuf};

use hnsw_rs::api::AnnT as _;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use serde::{Deserialize, Serialize};
use world::World;

/// `1 - a.b` for unit vectors, clamped at 0. (`anndists`' `DistDot` asserts
/// instead of clamping, and rounding makes `a.a` slightly above 1.)
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - world::dot(a, b)).max(0.0)
    }
}

/// HNSW graph parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Links per node.
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to k when k is larger).
    pub ef_search: usize,
    /// Independent graphs the items are dealt into.
    pub shards: usize,
}

/// What a saved index was built from; loading checks it against the world
/// and the config, so a stale index is never served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    items: usize,
    dims: usize,
    m: usize,
    ef_construction: usize,
    shards: usize,
    /// Every file of the index with its length and XXH3-64 checksum, so a
    /// damaged file is refused before the graph loader reads it.
    #[serde(default)]
    files: Vec<FileSum>,
}

/// A file's name, length and XXH3-64 checksum, as a manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileSum {
    pub(crate) name: String,
    pub(crate) len: u64,
    pub(crate) xxh3: String,
}

/// The [`FileSum`] of bytes already read from `path`.
pub(crate) fn checksum_bytes(path: &Path, bytes: &[u8]) -> FileSum {
    FileSum {
        name: file_name(path),
        len: bytes.len() as u64,
        xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The [`FileSum`] of the file at `path`, read in 1 MiB pieces.
pub(crate) fn checksum(path: &Path) -> Result<FileSum, IndexFileError> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| file_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(FileSum {
        name: file_name(path),
        len,
        xxh3: format!("{:016x}", hasher.digest()),
    })
}

/// Writes `manifest` as pretty JSON to `path`.
pub(crate) fn write_manifest(path: &Path, manifest: &impl Serialize) -> Result<(), IndexFileError> {
    let text = serde_json::to_string_pretty(manifest).map_err(|e| file_err(path, e))?;
    std::fs::write(path, text).map_err(|e| file_err(path, e))
}

/// Reads the manifest at `path`; `Ok(None)` when there is none.
pub(crate) fn read_manifest<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, IndexFileError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| file_err(path, e))
}

/// The error for a manifest made for another world or other parameters.
pub(crate) fn mismatch(
    path: &Path,
    got: &impl std::fmt::Debug,
    want: &impl std::fmt::Debug,
) -> IndexFileError {
    file_err(
        path,
        format!(
            "built for {got:?}, but the world and recall config ask for {want:?}; \
             rebuild it with `feeds world --out` or remove the directory"
        ),
    )
}

/// The error for a file whose length or checksum is not the manifest's.
pub(crate) fn damaged(path: &Path, actual: &FileSum, expected: &FileSum) -> IndexFileError {
    file_err(
        path,
        format!(
            "damaged: {} bytes with checksum {}, the manifest says {} bytes with {}",
            actual.len, actual.xxh3, expected.len, expected.xxh3
        ),
    )
}

const FORMAT: u32 = 1;
/// The manifest's file name inside an index directory.
pub const MANIFEST: &str = "index.json";

/// A saved index that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct IndexFileError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn file_err(path: &Path, message: impl std::fmt::Display) -> IndexFileError {
    IndexFileError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Nearest items by embedding (dot product of unit vectors).
pub struct AnnIndex {
    /// One graph per shard; each owns a copy of its vectors.
    shards: Vec<Hnsw<'static, f32, UnitDot>>,
    /// Search-time candidate list size.
    ef_search: usize,
}

/// Layers of every graph: hnsw_rs's maximum, which its file format requires.
/// (Levels are drawn with scale 1/ln(m), so the upper ones stay empty on
/// small shards.)
const LAYERS: usize = 16;

/// `work(i)` for every shard `i`, one thread each, as many at a time as
/// there are cores; each result (or the thread's panic) in shard order.
fn per_shard<T: Send>(
    shards: usize,
    work: impl Fn(usize) -> T + Sync,
) -> Vec<std::thread::Result<T>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work = &work;
    let mut out = Vec::with_capacity(shards);
    for wave in (0..shards).collect::<Vec<_>>().chunks(threads) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = wave.iter().map(|&i| scope.spawn(move || work(i))).collect();
            out.extend(handles.into_iter().map(|h| h.join()));
        });
    }
    out
}

impl AnnIndex {
    /// Indexes every item embedding of `world`, one thread per shard.
    pub fn build(world: &World, params: IndexParams) -> Self {
        let shards = params.shards.max(1);
        let dims = world.dims();
        let embeddings = world.item_embeddings();
        let progress = world::progress::Progress::new("recall: HNSW items", world.len() as u64);
        let build_one = |shard: usize| {
            let ids: Vec<usize> = (shard..world.len()).step_by(shards).collect();
            let hnsw = Hnsw::new(params.m, ids.len(), LAYERS, params.ef_construction, UnitDot);
            for id in ids {
                hnsw.insert((&embeddings[id * dims..(id + 1) * dims], id));
                progress.add(1);
            }
            hnsw
        };
        // A panic inside hnsw_rs is a bug there; rebuild that shard on this
        // thread rather than lose it.
        let built: Vec<Hnsw<'static, f32, UnitDot>> = per_shard(shards, build_one)
            .into_iter()
            .enumerate()
            .map(|(shard, out)| out.unwrap_or_else(|_| build_one(shard)))
            .collect();
        progress.finish();
        Self {
            shards: built,
            ef_search: params.ef_search,
        }
    }

    /// Writes the index into `dir` (created if needed): one graph and one
    /// data file per shard, and a manifest.
    pub fn save(
        &self,
        dir: &Path,
        world: &World,
        params: IndexParams,
    ) -> Result<(), IndexFileError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        for (i, shard) in self.shards.iter().enumerate() {
            let base = format!("shard-{i}");
            for ext in ["hnsw.graph", "hnsw.data"] {
                let path = dir.join(format!("{base}.{ext}"));
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| file_err(&path, e))?;
                }
            }
            let written = shard
                .file_dump(dir, &base)
                .map_err(|e| file_err(&dir.join(&base), e))?;
            if written != base {
                return Err(file_err(
                    &dir.join(&base),
                    format!("written as {written:?} instead"),
                ));
            }
        }
        let mut files = Vec::new();
        for i in 0..self.shards.len() {
            for ext in ["hnsw.graph", "hnsw.data"] {
                files.push(checksum(&dir.join(format!("shard-{i}.{ext}")))?);
            }
        }
        let manifest = Manifest {
            format: FORMAT,
            items: world.len(),
            dims: world.dims(),
            m: params.m,
            ef_construction: params.ef_construction,
            shards: self.shards.len(),
            files,
        };
        write_manifest(&dir.join(MANIFEST), &manifest)
    }

    /// Loads an index saved by [`AnnIndex::save`] for this `world` and
    /// `params`. `Ok(None)` when `dir` holds no index; an error naming the
    /// file when it holds one that is unreadable or was built for another
    /// world or other parameters.
    pub fn load(
        dir: &Path,
        world: &World,
        params: IndexParams,
    ) -> Result<Option<Self>, IndexFileError> {
        let path = dir.join(MANIFEST);
        let Some(manifest) = read_manifest::<Manifest>(&path)? else {
            return Ok(None);
        };
        let want = Manifest {
            format: FORMAT,
            items: world.len(),
            dims: world.dims(),
            m: params.m,
            ef_construction: params.ef_construction,
            shards: params.shards.max(1),
            files: manifest.files.clone(),
        };
        if manifest != want {
            return Err(mismatch(&path, &manifest, &want));
        }
        if manifest.files.len() != 2 * want.shards {
            return Err(file_err(
                &path,
                format!(
                    "lists {} files, expected {}",
                    manifest.files.len(),
                    2 * want.shards
                ),
            ));
        }
        // Exactly the files the graph loader reads, in the order `save`
        // lists them: a name from the manifest is never joined to `dir`
        // unchecked (an absolute or `..` name would be read from anywhere),
        // and no shard file escapes its checksum.
        let expected: Vec<String> = (0..want.shards)
            .flat_map(|i| ["hnsw.graph", "hnsw.data"].map(|ext| format!("shard-{i}.{ext}")))
            .collect();
        let listed: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
        if listed != expected {
            return Err(file_err(
                &path,
                format!("lists the files {listed:?}, expected {expected:?}"),
            ));
        }
        for sum in &manifest.files {
            let file = dir.join(&sum.name);
            if !file.exists() {
                return Err(file_err(&file, "missing"));
            }
            let actual = checksum(&file)?;
            if actual != *sum {
                return Err(damaged(&file, &actual, sum));
            }
        }
        let load_one = |i: usize| -> Result<Hnsw<'static, f32, UnitDot>, IndexFileError> {
            let base = format!("shard-{i}");
            let graph = dir.join(format!("{base}.hnsw.graph"));
            // The loaded graph borrows its loader for its whole life; the
            // index lives as long as the process, so the loader does too.
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, &base)));
            let hnsw: Hnsw<'static, f32, UnitDot> = io
                .load_hnsw::<f32, UnitDot>()
                .map_err(|e| file_err(&graph, format!("cannot load: {e}")))?;
            let expected = (i..world.len()).step_by(want.shards).count();
            if hnsw.get_nb_point() != expected {
                return Err(file_err(
                    &graph,
                    format!("holds {} points, expected {expected}", hnsw.get_nb_point()),
                ));
            }
            Ok(hnsw)
        };
        let shards = per_shard(want.shards, load_one)
            .into_iter()
            .enumerate()
            .map(|(i, out)| {
                out.unwrap_or_else(|_| {
                    Err(file_err(
                        &dir.join(format!("shard-{i}.hnsw.graph")),
                        "the graph loader failed on this file",
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            shards,
            ef_search: params.ef_search,
        }))
    }

    /// Up to `k` items nearest `query` (a unit vector), nearest first, with
    /// their similarity (dot product).
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        // Items are dealt to shards at random with respect to any query, so
        // each shard holds about k / shards of the true top k: asking each
        // for a quarter more than its share (plus a margin), with the
        // candidate list scaled the same way, keeps the merged answer while
        // the total work stays near one search of the whole.
        let shards = self.shards.len();
        let share = |n: usize| match shards {
            1 => n,
            s => n.min((n * 5).div_ceil(4 * s) + 8),
        };
        let per_shard = share(k);
        let ef = share(self.ef_search).max(per_shard);
        let mut found: Vec<(u64, f32)> = self
            .shards
            .iter()
            .flat_map(|shard| shard.search(query, per_shard, ef))
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect();
        // Stable order for equal distances, so every process agrees.
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found.truncate(k);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_naming_files_elsewhere_is_refused() {
        // Found by fuzzing: the loader read and checksummed whatever files
        // the manifest named (`/x` or `../x` too), while the graph loader
        // read the shard files, which then went unchecked.
        let world = World::generate(&world::WorldConfig {
            items: 200,
            users: 10,
            categories: 4,
            dims: 8,
            ..world::WorldConfig::default()
        });
        let params = IndexParams {
            m: 4,
            ef_construction: 16,
            ef_search: 16,
            shards: 2,
        };
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("index");
        AnnIndex::build(&world, params)
            .save(&dir, &world, params)
            .expect("save");
        // The same bytes outside the directory, so only the name differs.
        std::fs::copy(
            dir.join("shard-0.hnsw.graph"),
            root.path().join("outside.hnsw.graph"),
        )
        .expect("copy");
        let manifest = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        std::fs::write(
            &manifest,
            text.replace("\"shard-0.hnsw.graph\"", "\"../outside.hnsw.graph\""),
        )
        .expect("rewrite");
        let err = AnnIndex::load(&dir, &world, params).err().expect("refused");
        assert!(err.path.ends_with(MANIFEST), "{err}");
        assert!(err.message.contains("outside.hnsw.graph"), "{err}");
    }

    #[test]
    fn finds_near_neighbours_deterministically() {
        let cfg = world::WorldConfig {
            items: 2_000,
            users: 10,
            dims: 16,
            ..world::WorldConfig::default()
        };
        let world = World::generate(&cfg);
        let params = IndexParams {
            m: 12,
            ef_construction: 64,
            ef_search: 64,
            shards: 2,
        };
        let a = AnnIndex::build(&world, params);
        let b = AnnIndex::build(&world, params);
        let q = world.item_embedding(7).expect("item 7");
        let got = a.nearest(q, 20);
        assert_eq!(got, b.nearest(q, 20));
        assert_eq!(got[0].0, 7, "an item is its own nearest neighbour");
        // Against brute force: most of the true top 20 are found.
        let mut exact: Vec<(u64, f32)> = (0..2_000u64)
            .map(|i| (i, world::dot(q, world.item_embedding(i).expect("item"))))
            .collect();
        exact.sort_by(|x, y| y.1.total_cmp(&x.1));
        let truth: std::collections::HashSet<u64> = exact.iter().take(20).map(|x| x.0).collect();
        let hits = got.iter().filter(|(i, _)| truth.contains(i)).count();
        assert!(hits >= 16, "recall@20 {hits}/20");

        // Saved and loaded back, it answers the same.
        let dir = tempfile::tempdir().expect("tempdir");
        a.save(dir.path(), &world, params).expect("save");
        let c = AnnIndex::load(dir.path(), &world, params)
            .expect("load")
            .expect("an index is there");
        assert_eq!(c.nearest(q, 20), got);
        // Another shard count is refused, naming the manifest.
        let other = IndexParams {
            shards: 3,
            ..params
        };
        let err = AnnIndex::load(dir.path(), &world, other)
            .err()
            .expect("mismatch");
        assert!(err.path.ends_with(MANIFEST), "{err}");
        // A truncated graph file is refused, naming it.
        let graph = dir.path().join("shard-1.hnsw.graph");
        let bytes = std::fs::read(&graph).expect("graph");
        std::fs::write(&graph, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = AnnIndex::load(dir.path(), &world, params)
            .err()
            .expect("corrupt");
        assert!(err.path.ends_with("shard-1.hnsw.graph"), "{err}");
        assert!(
            AnnIndex::load(&dir.path().join("none"), &world, params)
                .expect("no index")
                .is_none()
        );
    }
}
