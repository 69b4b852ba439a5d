//! The config loader as `feeds serve --config FILE` runs it: the input is
//! the TOML file, loaded over the defaults and validated. It must load or
//! give an error that names the key and the file, never panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use feeds::LoadError;
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fuzz::scratch("config").join("feeds.toml"))
}

fuzz_target!(
    init: {
        // The environment layers over the file: a FEEDS__ variable here
        // would make every input load the same way.
        assert!(
            std::env::vars().all(|(k, _)| !k.starts_with(feeds::ENV_PREFIX)),
            "unset the {}* variables to fuzz the config file",
            feeds::ENV_PREFIX
        );
        file();
    },
    |data: &[u8]| {
        let path = file();
        fuzz::write_files(path.parent().expect("in scratch"), &["feeds.toml"], &[data]);
        match feeds::load(Some(path)) {
            // A loaded config is one `validate()` accepts, with the same plan.
            Ok((config, plan)) => assert_eq!(config.validate().ok(), Some(plan)),
            Err(LoadError::Invalid { error, origin }) => {
                assert!(!error.key.is_empty(), "an invalid value names no key: {error}");
                assert!(!origin.is_empty(), "{error} comes from nowhere");
            }
            Err(LoadError::Parse(e)) => {
                let message = LoadError::Parse(e).to_string();
                assert!(
                    message.contains("feeds.toml") || message.contains("env"),
                    "a parse error names no source: {message}"
                );
            }
            Err(e @ LoadError::File { .. }) => panic!("the file is there: {e}"),
        }
    }
);
