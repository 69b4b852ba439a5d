//! The i2i table loader (recall's index directory): the input is a mode
//! byte, then `i2i.json` and `i2i.bin` packed (see `fuzz::unpack`). With
//! the mode byte odd, the manifest's length and checksum are set to the
//! data's, so inputs reach the checks behind the checksum; with it even,
//! the files are written as they are. The table is checked against a
//! fixed small world. It must load, find no table, or give an error
//! naming one of the two files; a table it loads must answer look-ups.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

const FILES: [&str; 2] = ["i2i.json", "i2i.bin"];

fn setup() -> &'static (PathBuf, Arc<world::World>) {
    static SETUP: OnceLock<(PathBuf, Arc<world::World>)> = OnceLock::new();
    SETUP.get_or_init(|| (fuzz::scratch("i2i"), fuzz::small_world()))
}

/// The manifest with its `file` entry describing `data`, when it is a JSON
/// object; otherwise unchanged.
fn with_checksum(manifest: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(manifest) else {
        return manifest.to_vec();
    };
    m.insert(
        "file".into(),
        serde_json::json!({
            "name": FILES[1],
            "len": data.len(),
            "xxh3": format!("{:016x}", xxhash_rust::xxh3::xxh3_64(data)),
        }),
    );
    serde_json::to_vec(&m).unwrap_or_else(|_| manifest.to_vec())
}

fuzz_target!(
    init: {
        setup();
    },
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let (dir, world) = setup();
        let mut parts = fuzz::unpack(rest);
        let fixed;
        if mode % 2 == 1 && parts.len() >= 2 {
            fixed = with_checksum(parts[0], parts[1]);
            parts[0] = &fixed;
        }
        fuzz::write_files(dir, &FILES, &parts);
        match recall::I2iTable::load(dir, world, fuzz::I2I_NEIGHBOURS) {
            Ok(Some(table)) => {
                for item in 0..world.len() as u64 + 2 {
                    assert!(table.of(item).count() <= table.neighbours());
                }
                let _ = table.of(u64::MAX).count();
            }
            Ok(None) => panic!("the manifest is there"),
            Err(e) => assert!(
                FILES.iter().any(|name| e.path == dir.join(name)),
                "the error names neither file: {e}"
            ),
        }
    }
);
