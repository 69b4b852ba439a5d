//! The item-to-item table: each item's nearest items, computed once when the
//! index is built (or saved with it by `feeds world --out`) so a request
//! looks its neighbours up instead of searching for them.
//!
//! An item's neighbours are searched within its own category: items are
//! their category's centre plus noise, so their nearest items lie there
//! (`cargo test -p recall i2i` measures the overlap with an unrestricted
//! exact search), and the search is then `categories` times cheaper. Within
//! the category the search is exact over the quantised codes and rescored
//! with the `f32` embeddings, so the table is the same in every process.
//!
//! # File format
//!
//! `i2i.bin`: the 8 bytes `TNDI2I01`, then `items` and `neighbours` as
//! little-endian `u32`, then `items x neighbours` neighbour ids (`u32`,
//! `u32::MAX` where a small category has fewer), then as many similarities
//! (`f32`), all little-endian. `i2i.json` records the world it was built for
//! and the file's length and XXH3-64 checksum; loading checks both.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use world::World;
use world::progress::Progress;

use crate::flat::{FlatIndex, best_positions, sort_scored};
use crate::index::{
    FileSum, IndexFileError, checksum, damaged, file_err, mismatch, read_manifest, write_manifest,
};

const MAGIC: &[u8; 8] = b"TNDI2I01";
/// The table's data file inside an index directory.
pub const DATA: &str = "i2i.bin";
/// Its manifest.
pub const MANIFEST: &str = "i2i.json";
/// No neighbour in this slot.
const NONE: u32 = u32::MAX;

impl Manifest {
    fn new(world: &World, neighbours: usize, file: FileSum) -> Self {
        Self {
            format: 1,
            items: world.len(),
            dims: world.dims(),
            categories: world.config().categories as usize,
            neighbours,
            file,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    items: usize,
    dims: usize,
    categories: usize,
    neighbours: usize,
    file: FileSum,
}

/// One item and its neighbours, as a worker found them.
type Row = (u32, Vec<(u64, f32)>);

/// Each item's nearest items of its category, nearest first.
pub struct I2iTable {
    neighbours: usize,
    ids: Vec<u32>,
    scores: Vec<f32>,
}

impl I2iTable {
    /// Computes the table for every item of `world`, on every core.
    pub fn build(world: &World, flat: &FlatIndex, neighbours: usize) -> Self {
        let n = world.len();
        let mut ids = vec![NONE; n * neighbours];
        let mut scores = vec![0f32; n * neighbours];
        let progress = Progress::new("recall: i2i table items", n as u64);
        // Work is handed out a category block at a time, in chunks of
        // items, to as many threads as there are cores; each result goes
        // to its item's own rows, so the table does not depend on which
        // thread did what.
        let chunk = 256;
        let tasks: Vec<(usize, usize)> = (0..flat.categories())
            .flat_map(|c| {
                let len = flat.block_len(c);
                (0..len.div_ceil(chunk)).map(move |i| (c, i * chunk))
            })
            .collect();
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let results: Vec<Vec<Row>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        let mut row_scores: Vec<i32> = Vec::new();
                        loop {
                            let t = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(c, start)) = tasks.get(t) else {
                                break;
                            };
                            let end = (start + chunk).min(flat.block_len(c));
                            for pos in start..end {
                                let own = flat.codes_at(c, pos);
                                flat.score_block(c, own, &mut row_scores);
                                let want = neighbours + neighbours / 4 + 8;
                                let Some(item) = flat.id_at(c, pos) else {
                                    continue;
                                };
                                let Some(e) = world.item_embedding(u64::from(item)) else {
                                    continue;
                                };
                                let mut found: Vec<(u64, f32)> =
                                    best_positions(&row_scores, want + 1)
                                        .into_iter()
                                        .filter(|p| *p != pos)
                                        .filter_map(|p| flat.id_at(c, p))
                                        .map(u64::from)
                                        .filter_map(|id| {
                                            world.item_embedding(id).map(|o| (id, world::dot(e, o)))
                                        })
                                        .collect();
                                sort_scored(&mut found);
                                found.truncate(neighbours);
                                mine.push((item, found));
                            }
                            progress.add((end - start) as u64);
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        for (item, found) in results.into_iter().flatten() {
            let row = item as usize * neighbours;
            for (slot, (id, score)) in found.into_iter().enumerate() {
                ids[row + slot] = id as u32;
                scores[row + slot] = score;
            }
        }
        progress.finish();
        Self {
            neighbours,
            ids,
            scores,
        }
    }

    /// Neighbours kept per item.
    pub fn neighbours(&self) -> usize {
        self.neighbours
    }

    /// Up to [`I2iTable::neighbours`] nearest items of `item`, nearest first,
    /// with their similarity; empty for an item outside the table.
    pub fn of(&self, item: u64) -> impl Iterator<Item = (u64, f32)> + '_ {
        let row = usize::try_from(item)
            .ok()
            .and_then(|i| i.checked_mul(self.neighbours))
            .filter(|r| r + self.neighbours <= self.ids.len());
        let range = row.map_or(0..0, |r| r..r + self.neighbours);
        self.ids[range.clone()]
            .iter()
            .zip(&self.scores[range])
            .take_while(|(id, _)| **id != NONE)
            .map(|(id, s)| (u64::from(*id), *s))
    }

    /// Writes the table into `dir` (created if needed).
    pub fn save(&self, dir: &Path, world: &World) -> Result<(), IndexFileError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let path = dir.join(DATA);
        let mut bytes = Vec::with_capacity(16 + self.ids.len() * 8);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(world.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.neighbours as u32).to_le_bytes());
        for id in &self.ids {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        for s in &self.scores {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        std::fs::write(&path, &bytes).map_err(|e| file_err(&path, e))?;
        let manifest = Manifest::new(world, self.neighbours, checksum(&path)?);
        write_manifest(&dir.join(MANIFEST), &manifest)
    }

    /// Loads a table saved by [`I2iTable::save`] for this `world` with
    /// `neighbours` per item. `Ok(None)` when `dir` holds none; an error
    /// naming the file when it holds one that is damaged or was built for
    /// another world or another neighbour count.
    pub fn load(
        dir: &Path,
        world: &World,
        neighbours: usize,
    ) -> Result<Option<Self>, IndexFileError> {
        let path = dir.join(MANIFEST);
        let Some(manifest) = read_manifest::<Manifest>(&path)? else {
            return Ok(None);
        };
        let want = Manifest::new(world, neighbours, manifest.file.clone());
        if manifest != want {
            return Err(mismatch(&path, &manifest, &want));
        }
        let data = dir.join(DATA);
        let progress = Progress::new("recall: loading i2i table bytes", manifest.file.len);
        let bytes = std::fs::read(&data).map_err(|e| file_err(&data, e))?;
        progress.add(bytes.len() as u64);
        let actual = crate::index::checksum_bytes(&data, &bytes);
        if actual != manifest.file {
            return Err(damaged(&data, &actual, &manifest.file));
        }
        let slots = world.len() * neighbours;
        if bytes.len() != 16 + slots * 8 || &bytes[..8] != MAGIC {
            return Err(file_err(
                &data,
                format!(
                    "{} bytes, expected {} with the header {:?}",
                    bytes.len(),
                    16 + slots * 8,
                    String::from_utf8_lossy(MAGIC)
                ),
            ));
        }
        let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let header = (u32::from_le_bytes(word(8)), u32::from_le_bytes(word(12)));
        if header != (world.len() as u32, neighbours as u32) {
            return Err(file_err(
                &data,
                format!("header says {header:?} (items, neighbours)"),
            ));
        }
        let body = &bytes[16..];
        let ids: Vec<u32> = body[..slots * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let scores: Vec<f32> = body[slots * 4..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = ids
            .iter()
            .position(|id| *id != NONE && *id as usize >= world.len())
        {
            return Err(file_err(
                &data,
                format!("slot {i} names item {}, outside the world", ids[i]),
            ));
        }
        progress.finish();
        Ok(Some(Self {
            neighbours,
            ids,
            scores,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i2i_table_matches_exact_search_and_round_trips() {
        let w = World::generate(&world::WorldConfig {
            items: 2_000,
            users: 10,
            dims: 16,
            categories: 8,
            ..world::WorldConfig::default()
        });
        let flat = FlatIndex::build(&w);
        let table = I2iTable::build(&w, &flat, 20);
        // Within the category the table is the exact top 20.
        let e = w.item_embedding(7).expect("item");
        let cat = w.item(7).expect("item").category;
        let mut exact: Vec<(u64, f32)> = w
            .category_items(cat)
            .iter()
            .filter(|id| **id != 7)
            .map(|id| (*id, world::dot(e, w.item_embedding(*id).expect("item"))))
            .collect();
        sort_scored(&mut exact);
        exact.truncate(20);
        assert_eq!(table.of(7).collect::<Vec<_>>(), exact);
        // Overlap with an unrestricted exact search, over 200 items.
        let mut hits = 0;
        for item in 0..200u64 {
            let e = w.item_embedding(item).expect("item");
            let mut all: Vec<(u64, f32)> = (0..2_000u64)
                .filter(|i| *i != item)
                .map(|i| (i, world::dot(e, w.item_embedding(i).expect("item"))))
                .collect();
            sort_scored(&mut all);
            let truth: std::collections::HashSet<u64> = all.iter().take(20).map(|x| x.0).collect();
            hits += table.of(item).filter(|(i, _)| truth.contains(i)).count();
        }
        let overlap = hits as f64 / (200.0 * 20.0);
        println!("i2i overlap with unrestricted exact top 20: {overlap:.3}");
        assert!(overlap > 0.9, "{overlap}");

        let dir = tempfile::tempdir().expect("tempdir");
        table.save(dir.path(), &w).expect("save");
        let back = I2iTable::load(dir.path(), &w, 20)
            .expect("load")
            .expect("a table is there");
        assert_eq!(back.ids, table.ids);
        assert_eq!(back.scores, table.scores);
        // Another neighbour count is refused, naming the manifest.
        let err = I2iTable::load(dir.path(), &w, 10).err().expect("mismatch");
        assert!(err.path.ends_with(MANIFEST), "{err}");
        // A damaged data file is refused, naming it.
        let data = dir.path().join(DATA);
        let mut bytes = std::fs::read(&data).expect("data");
        bytes[100] ^= 1;
        std::fs::write(&data, &bytes).expect("write");
        let err = I2iTable::load(dir.path(), &w, 20).err().expect("damaged");
        assert!(err.path.ends_with(DATA), "{err}");
        assert!(
            I2iTable::load(&dir.path().join("none"), &w, 20)
                .expect("none")
                .is_none()
        );
    }
}
