//! The HNSW index loader (recall's index directory with `recall.ann =
//! "hnsw"`): the input is `index.json`, beside the graph and data files of
//! a real index of a fixed small world, saved once per process. It must
//! load, or give an error naming the manifest or a file it lists; an index
//! it loads must answer a search.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use fuzz::{HNSW_MANIFEST, HNSW_PARAMS};
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (PathBuf, Arc<world::World>) {
    static SETUP: OnceLock<(PathBuf, Arc<world::World>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = fuzz::scratch("hnsw");
        let world = fuzz::small_world();
        recall::AnnIndex::build(&world, HNSW_PARAMS)
            .save(&dir, &world, HNSW_PARAMS)
            .unwrap_or_else(|e| panic!("fuzz setup: {e}"));
        (dir, world)
    })
}

fuzz_target!(
    init: {
        setup();
    },
    |data: &[u8]| {
        let (dir, world) = setup();
        fuzz::write_files(dir, &[HNSW_MANIFEST], &[data]);
        match recall::AnnIndex::load(dir, world, HNSW_PARAMS) {
            Ok(Some(index)) => {
                let query = world.item_embedding(7).expect("item 7");
                assert!(index.nearest(query, 10).len() <= 10);
            }
            Ok(None) => panic!("the manifest is there"),
            Err(e) => assert!(e.path.starts_with(dir), "the error names a file elsewhere: {e}"),
        }
    }
);
