//! The on-disk world, written by `feeds world --out DIR` and read by
//! `world.dir`. Plain formats, so a real catalogue can be dropped in:
//!
//! | file | content |
//! | --- | --- |
//! | `world.json` | `{"format": "tandem-world-v1", "seed", "items", "users", "dims", "categories", "creators"}` |
//! | `items.csv` | header `id,category,creator,age_days,popularity`; ids `0..items` in order |
//! | `item_embeddings.f32` | `items x dims` little-endian `f32`, row `i` is item `i` |
//! | `user_embeddings.f32` | `users x dims` little-endian `f32`, row `u` is user `u` |
//! | `interactions.csv` | header `user,item,ts_ms`; any order |
//!
//! A loaded world has no hidden ground truth, so it serves but cannot be
//! evaluated against the truth.

use crate::progress::Progress;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Item, World, WorldConfig};

const FORMAT: &str = "tandem-world-v1";

/// A world file is missing, unreadable or malformed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct FileError {
    /// The offending file.
    pub file: PathBuf,
    /// What is wrong, with the line number where there is one.
    pub message: String,
}

fn err(file: &Path, message: impl Into<String>) -> FileError {
    FileError {
        file: file.to_owned(),
        message: message.into(),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    seed: u64,
    items: u32,
    users: u32,
    dims: u32,
    categories: u32,
    creators: u32,
}

impl World {
    /// Writes the world to `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<(), FileError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
        let c = &self.config;
        let manifest = Manifest {
            format: FORMAT.into(),
            seed: c.seed,
            items: self.items.len() as u32,
            users: self.histories.len() as u32,
            dims: c.dims,
            categories: c.categories,
            creators: c.creators,
        };
        let path = dir.join("world.json");
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| err(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| err(&path, e.to_string()))?;

        write_with(&dir.join("items.csv"), |w| {
            writeln!(w, "id,category,creator,age_days,popularity")?;
            for i in &self.items {
                writeln!(
                    w,
                    "{},{},{},{},{}",
                    i.id, i.category, i.creator, i.age_days, i.popularity
                )?;
            }
            Ok(())
        })?;
        write_with(&dir.join("item_embeddings.f32"), |w| {
            write_f32s(w, &self.item_embeddings)
        })?;
        write_with(&dir.join("user_embeddings.f32"), |w| {
            write_f32s(w, &self.user_embeddings)
        })?;
        write_with(&dir.join("interactions.csv"), |w| {
            writeln!(w, "user,item,ts_ms")?;
            for (u, history) in self.histories.iter().enumerate() {
                for (k, item) in history.iter().enumerate() {
                    writeln!(w, "{u},{item},{}", 1_760_000_000_000i64 - k as i64 * 60_000)?;
                }
            }
            Ok(())
        })
    }

    /// Reads a world written by [`World::save`] (or by hand, in that format).
    pub fn load(dir: &Path) -> Result<World, FileError> {
        let path = dir.join("world.json");
        let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e.to_string()))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| err(&path, e.to_string()))?;
        if m.format != FORMAT {
            return Err(err(
                &path,
                format!("format {:?} is not {FORMAT:?}", m.format),
            ));
        }
        let config = WorldConfig {
            seed: m.seed,
            items: m.items,
            users: m.users,
            dims: m.dims,
            categories: m.categories,
            creators: m.creators,
            dir: Some(dir.display().to_string()),
        };
        config.validate().map_err(|e| err(&path, e.to_string()))?;
        let names = [
            "items.csv",
            "item_embeddings.f32",
            "user_embeddings.f32",
            "interactions.csv",
        ];
        let bytes: u64 = names
            .iter()
            .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
            .map(|m| m.len())
            .sum();
        let progress = crate::progress::Progress::new("world: loading bytes", bytes);

        let path = dir.join("items.csv");
        let mut items = Vec::with_capacity(m.items as usize);
        for_rows(&path, 5, &progress, |line, f| {
            let bad = |what: &str| err(&path, format!("line {line}: {what}"));
            let id: u64 = f[0].parse().map_err(|_| bad("id is not a number"))?;
            if id != items.len() as u64 {
                return Err(bad(&format!(
                    "id {id} out of order (expected {})",
                    items.len()
                )));
            }
            let item = Item {
                id,
                category: f[1].parse().map_err(|_| bad("category is not a number"))?,
                creator: f[2].parse().map_err(|_| bad("creator is not a number"))?,
                age_days: f[3].parse().map_err(|_| bad("age_days is not a number"))?,
                popularity: f[4]
                    .parse()
                    .map_err(|_| bad("popularity is not a number"))?,
            };
            if item.category >= m.categories || item.creator >= m.creators {
                return Err(bad("category or creator out of the manifest's range"));
            }
            if !(item.popularity > 0.0 && item.popularity <= 1.0) {
                return Err(bad("popularity must be in (0, 1]"));
            }
            items.push(item);
            Ok(())
        })?;
        if items.len() != m.items as usize {
            return Err(err(
                &path,
                format!("{} items, the manifest says {}", items.len(), m.items),
            ));
        }
        let dims = m.dims as usize;
        let item_embeddings = read_f32s(
            &dir.join("item_embeddings.f32"),
            items.len() * dims,
            &progress,
        )?;
        let user_embeddings = read_f32s(
            &dir.join("user_embeddings.f32"),
            m.users as usize * dims,
            &progress,
        )?;

        let path = dir.join("interactions.csv");
        let mut events: Vec<Vec<(i64, u64)>> = vec![Vec::new(); m.users as usize];
        for_rows(&path, 3, &progress, |line, f| {
            let bad = |what: &str| err(&path, format!("line {line}: {what}"));
            let user: usize = f[0].parse().map_err(|_| bad("user is not a number"))?;
            let item: u64 = f[1].parse().map_err(|_| bad("item is not a number"))?;
            let ts: i64 = f[2].parse().map_err(|_| bad("ts_ms is not a number"))?;
            if user >= events.len() || item >= items.len() as u64 {
                return Err(bad("user or item outside the manifest's range"));
            }
            events[user].push((ts, item));
            Ok(())
        })?;
        let histories = events
            .into_iter()
            .map(|mut e| {
                e.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                e.into_iter().map(|(_, item)| item).collect()
            })
            .collect();

        let mut by_popularity: Vec<u64> = (0..items.len() as u64).collect();
        by_popularity.sort_by(|a, b| {
            items[*b as usize]
                .popularity
                .total_cmp(&items[*a as usize].popularity)
                .then(a.cmp(b))
        });
        let mut by_category = vec![Vec::new(); m.categories as usize];
        for id in &by_popularity {
            by_category[items[*id as usize].category as usize].push(*id);
        }
        progress.finish();
        Ok(World {
            config,
            items,
            by_popularity,
            by_category,
            item_embeddings,
            user_embeddings,
            histories,
            hidden: None,
        })
    }
}

fn write_with(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let file = std::fs::File::create(path).map_err(|e| err(path, e.to_string()))?;
    let mut w = BufWriter::new(file);
    body(&mut w)
        .and_then(|()| w.flush())
        .map_err(|e| err(path, e.to_string()))
}

fn write_f32s(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

fn read_f32s(path: &Path, expected: usize, progress: &Progress) -> Result<Vec<f32>, FileError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    progress.add(bytes.len() as u64);
    if bytes.len() != expected * 4 {
        return Err(err(
            path,
            format!(
                "{} bytes, expected {} ({expected} f32 values)",
                bytes.len(),
                expected * 4
            ),
        ));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(path, format!("value {i} is not finite")));
    }
    Ok(values)
}

/// Calls `row` for every data line of a CSV with a header and `fields` columns.
fn for_rows(
    path: &Path,
    fields: usize,
    progress: &Progress,
    mut row: impl FnMut(usize, &[&str]) -> Result<(), FileError>,
) -> Result<(), FileError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| err(path, format!("line {}: {e}", i + 1)))?;
        progress.add(line.len() as u64 + 1);
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != fields {
            return Err(err(
                path,
                format!("line {}: {} fields, expected {fields}", i + 1, f.len()),
            ));
        }
        row(i + 1, &f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WorldConfig {
        WorldConfig {
            items: 500,
            users: 20,
            categories: 5,
            creators: 30,
            dims: 8,
            ..WorldConfig::default()
        }
    }

    #[test]
    fn round_trip_keeps_what_stages_see() {
        let dir = tempfile::tempdir().expect("tempdir");
        let world = World::generate(&small());
        world.save(dir.path()).expect("save");
        let loaded = World::load(dir.path()).expect("load");
        assert_eq!(loaded.items, world.items);
        assert_eq!(loaded.item_embeddings, world.item_embeddings);
        assert_eq!(loaded.histories, world.histories);
        assert_eq!(loaded.by_popularity, world.by_popularity);
        assert!(!loaded.has_truth());
    }

    #[test]
    fn corrupt_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        World::generate(&small()).save(dir.path()).expect("save");
        std::fs::write(dir.path().join("item_embeddings.f32"), [0u8; 10]).expect("truncate");
        let e = World::load(dir.path()).expect_err("truncated");
        assert!(e.to_string().contains("item_embeddings.f32"), "{e}");

        World::generate(&small()).save(dir.path()).expect("save");
        let items = dir.path().join("items.csv");
        let text = std::fs::read_to_string(&items).expect("read");
        std::fs::write(&items, text.replacen("\n3,", "\nthree,", 1)).expect("corrupt");
        let e = World::load(dir.path()).expect_err("corrupt");
        assert!(
            e.to_string().contains("items.csv") && e.to_string().contains("line 5"),
            "{e}"
        );
    }
}
