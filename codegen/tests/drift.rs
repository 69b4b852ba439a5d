//! The committed generated code is exactly what `proto/` generates today: a
//! proto change without `cargo run -p codegen` fails here.

use std::path::PathBuf;

#[test]
fn committed_code_matches_proto() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let fresh = codegen::generate(&root.join("proto")).expect("generate");
    let stale = fresh.stale_in(&root.join(codegen::GENERATED_DIR));
    assert!(
        stale.is_empty(),
        "{} out of date with proto/ ({}); regenerate with `cargo run -p codegen` and commit the result",
        codegen::GENERATED_DIR,
        stale.join(", ")
    );
}

#[test]
fn call_graph_is_declared_in_the_proto() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = codegen::generate(&root.join("proto")).expect("generate");
    // Callers first, from the `Calls:` lines.
    let order = out
        .stages
        .split("pub const ALL")
        .nth(1)
        .and_then(|s| s.split(';').nth(1))
        .unwrap_or_default()
        .to_owned();
    for w in ["Business", "Split", "Rerank", "FineRank", "Recall"].windows(2) {
        let (a, b) = (
            order.find(&format!("Stage::{}", w[0])),
            order.find(&format!("Stage::{}", w[1])),
        );
        assert!(a < b, "{} must come before {}: {order}", w[0], w[1]);
    }
}
