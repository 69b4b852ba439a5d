//! Split.Split: bytes -> `SplitRequest` -> the registry's local
//! `split` stub on the small world, with a deadline. Any status is an
//! answer; a panic, an abort or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(
    init: {
        fuzz::Handlers::get();
    },
    |data: &[u8]| {
        let Ok(request) = proxy_api::pb::SplitRequest::decode(data) else {
            return;
        };
        let handlers = fuzz::Handlers::get();
        let stage = handlers.registry.split().expect("split is bound local");
        let _answer = handlers.call(|cx| async move { stage.split(&cx, request).await });
    }
);
