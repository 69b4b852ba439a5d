//! The fine-rank model loader (`finerank.model_dir`): the input is one
//! model JSON file. It must load or give an error naming the file; a model
//! it loads must score feature rows.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use finerank::{FEATURES, Features, Model};
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fuzz::scratch("finerank").join("v1.json"))
}

fuzz_target!(
    init: {
        file();
    },
    |data: &[u8]| {
        let path = file();
        fuzz::write_files(path.parent().expect("in scratch"), &["v1.json"], &[data]);
        match Model::load(path) {
            Ok(model) => {
                let rows = [
                    Features::default(),
                    Features([1.0; FEATURES.len()]),
                    Features([-1.0, 0.5, 0.25, 1.0, 1.0, 0.0, 0.0]),
                ];
                assert_eq!(model.score(&rows).len(), rows.len());
            }
            Err(e) => assert_eq!(&e.path, path, "the error names another file: {e}"),
        }
    }
);
