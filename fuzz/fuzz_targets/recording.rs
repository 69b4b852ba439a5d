//! The recording reader (`feeds replay`): the input is one recording file.
//! Every record it yields must be whole; damage must be reported with the
//! file's name and an offset inside the input, and skipping damage must
//! always move forward and end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_api::record::RecordReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = RecordReader::new(data, "fuzz.rec");
    // Each record, or each skip, consumes at least one byte.
    for _ in 0..=data.len() {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                assert_eq!(e.file, "fuzz.rec");
                assert!(e.offset <= data.len() as u64, "{e}");
                if e.offset == 0 {
                    return;
                }
                match reader.skip_damage() {
                    Ok(skipped) => assert!(skipped > 0 || e.why.contains("truncated"), "{e}"),
                    Err(e) => panic!("skipping damage failed: {e}"),
                }
            }
        }
    }
    panic!("the reader did not reach the end of {} bytes", data.len());
});
