//! Corrupt world or model files stop `feeds serve` at start-up with an error
//! naming the file; intact ones written by `feeds world` / `feeds train`
//! serve the same answers as the generated world.

mod common;

use std::process::{Command, Output};

fn feeds(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::EXE);
    cmd.args(args).envs(common::test_env());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run feeds")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn corrupt_world_and_model_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world_dir = dir.path().join("world");
    let model_dir = dir.path().join("models");
    let w = world_dir.to_str().expect("utf-8 path");
    let m = model_dir.to_str().expect("utf-8 path");
    let out = feeds(&["world", "--out", w], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = feeds(&["train", "--out", m], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(model_dir.join("v1.json").is_file() && model_dir.join("v2.json").is_file());

    assert!(
        world_dir.join("index/i2i.json").is_file() && world_dir.join("index/i2i.bin").is_file(),
        "the i2i table is saved too"
    );

    let bad = [
        ("FEEDS__WORLD__DIR", w),
        ("FEEDS__PROCESS__LISTEN", "127.0.0.1:0"),
    ];
    // A damaged i2i table stops serve, naming it.
    let table = world_dir.join("index/i2i.bin");
    let intact = std::fs::read(&table).expect("table");
    let mut damaged = intact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&table, &damaged).expect("damage");
    let out = feeds(&["serve"], &bad);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("i2i.bin"), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("serving"), "{}", stderr(&out));
    std::fs::write(&table, &intact).expect("restore");
    // A table built for another neighbour count is refused, naming its
    // manifest.
    let out = feeds(
        &["serve"],
        &[bad[0], bad[1], ("FEEDS__RECALL__I2I_NEIGHBOURS", "32")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("i2i.json"), "{}", stderr(&out));

    // A truncated embedding file must stop serve before it listens.
    std::fs::write(world_dir.join("item_embeddings.f32"), [0u8; 12]).expect("truncate");
    let out = feeds(&["serve"], &bad);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("item_embeddings.f32"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("serving"), "{}", stderr(&out));

    std::fs::write(model_dir.join("v2.json"), "{ \"version\": ").expect("corrupt");
    let bad = [
        ("FEEDS__FINERANK__MODEL_DIR", m),
        ("FEEDS__PROCESS__LISTEN", "127.0.0.1:0"),
    ];
    let out = feeds(&["serve"], &bad);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("v2.json"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("serving"), "{}", stderr(&out));
}

#[tokio::test]
async fn saved_world_and_models_answer_like_the_generated_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("world");
    let m = dir.path().join("models");
    assert!(
        feeds(&["world", "--out", w.to_str().expect("path")], &[])
            .status
            .success()
    );
    assert!(
        feeds(&["train", "--out", m.to_str().expect("path")], &[])
            .status
            .success()
    );

    let cases = common::cases(40);
    let run = |config: feeds::Config| {
        let cases = cases.clone();
        async move {
            let plan = config.validate().expect("valid");
            let registry = feeds::build(&config, &plan).expect("registry");
            let business = registry.business().expect("local");
            let mut out = Vec::new();
            for (i, case) in cases.iter().enumerate() {
                out.push(common::call(business.as_ref(), case, i).await);
            }
            out
        }
    };
    let (generated, _) = common::config_for(
        &proxy_api::Stage::ALL,
        "127.0.0.1:0".parse().expect("addr"),
        &[],
    );
    let mut loaded = generated.clone();
    loaded.world.dir = Some(w.display().to_string());
    loaded.finerank.model_dir = Some(m.display().to_string());
    let want = run(generated).await;
    assert!(want.iter().filter(|o| o.is_ok()).count() > 30);
    assert_eq!(want, run(loaded).await);
}
