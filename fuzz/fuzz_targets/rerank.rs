//! Rerank.Rerank: bytes -> `RerankRequest` -> the registry's local
//! `rerank` stub on the small world, with a deadline. Any status is an
//! answer; a panic, an abort or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(
    init: {
        fuzz::Handlers::get();
    },
    |data: &[u8]| {
        let Ok(request) = proxy_api::pb::RerankRequest::decode(data) else {
            return;
        };
        let handlers = fuzz::Handlers::get();
        let stage = handlers.registry.rerank().expect("rerank is bound local");
        let _answer = handlers.call(|cx| async move { stage.rerank(&cx, request).await });
    }
);
