//! The world loader (`world.dir`): the input is a world directory packed
//! as `world.json`, `items.csv`, `item_embeddings.f32`,
//! `user_embeddings.f32` and `interactions.csv` (see `fuzz::unpack`; files
//! past the input's last part are left out). It must load or give an error
//! naming one of the files; a world it loads must answer every look-up
//! and quantise into recall's flat index.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fuzz::seeds::WORLD_FILES;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fuzz::scratch("world"))
}

fuzz_target!(
    init: {
        dir();
    },
    |data: &[u8]| {
        let dir = dir();
        fuzz::write_files(dir, &WORLD_FILES, &fuzz::unpack(data));
        match world::World::load(dir) {
            Ok(world) => {
                for id in 0..world.len() as u64 + 1 {
                    let _ = (world.item(id), world.item_embedding(id));
                }
                for user in 0..world.users() as u64 + 1 {
                    let _ = (world.history(user), world.user_embedding(user));
                    let _ = world.knows_user(user);
                }
                for category in 0..world.config().categories + 1 {
                    let _ = world.category_items(category);
                }
                let _ = world.by_popularity();
                // Recall's first use of a loaded world: quantise it by category.
                let _ = recall::FlatIndex::build(&world);
            }
            Err(e) => assert!(
                WORLD_FILES.iter().any(|name| e.file == dir.join(name)),
                "the error names no world file: {e}"
            ),
        }
    }
);
