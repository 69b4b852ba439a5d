//! The seed corpora: valid inputs for every target, made by the project's
//! own code (requests the stages answer, a saved world, trained models,
//! saved indexes, the shipped configs). `cargo run --example seeds -- DIR`
//! writes them as `DIR/<target>/seed-*`; `corpus/` holds a copy.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message as _;
use proxy_api::pb;

use crate::{HNSW_MANIFEST, HNSW_PARAMS, Handlers, I2I_NEIGHBOURS, pack, small_world};

/// One target's seeds: file names and contents.
pub type Seeds = Vec<(String, Vec<u8>)>;

/// Every target's seeds, by target name.
pub fn all(repo: &Path) -> Result<Vec<(&'static str, Seeds)>, String> {
    let requests = requests();
    let handlers = Handlers::get();
    // The assignment split makes for each request, so the stages below it
    // get the parameters they would get in the chain.
    let assignments: Vec<Option<pb::Assignment>> = requests
        .iter()
        .map(|(_, split)| {
            let stub = handlers.registry.split().ok()?;
            handlers
                .call(|cx| async move { stub.split(&cx, split.clone()).await })
                .ok()?
                .assignment
        })
        .collect();
    let encode = |m: &dyn Fn(usize) -> Vec<u8>| -> Seeds {
        (0..requests.len())
            .map(|i| (format!("seed-{i:02}"), m(i)))
            .collect()
    };
    let rank = |i: usize| {
        let s = &requests[i].1;
        pb::RankRequest {
            user_id: s.user_id.clone(),
            context: s.context.clone(),
            assignment: assignments[i].clone(),
            explain: s.explain,
            constraints: s.constraints.clone(),
        }
    };
    Ok(vec![
        ("business", encode(&|i| requests[i].0.encode_to_vec())),
        ("split", encode(&|i| requests[i].1.encode_to_vec())),
        (
            "rerank",
            encode(&|i| {
                let s = requests[i].1.clone();
                pb::RerankRequest {
                    user_id: s.user_id,
                    limit: s.limit,
                    context: s.context,
                    assignment: assignments[i].clone(),
                    explain: s.explain,
                    constraints: s.constraints,
                    page_size: s.page_size,
                }
                .encode_to_vec()
            }),
        ),
        ("finerank", encode(&|i| rank(i).encode_to_vec())),
        (
            "recall",
            encode(&|i| {
                let r = rank(i);
                pb::RecallRequest {
                    user_id: r.user_id,
                    context: r.context,
                    assignment: r.assignment,
                    explain: r.explain,
                    constraints: r.constraints,
                }
                .encode_to_vec()
            }),
        ),
        ("config", configs(&repo.join("deploy/local"))?),
        ("world_files", world_files()?),
        ("finerank_model", models()?),
        ("recall_i2i", i2i()?),
        ("recall_hnsw_manifest", hnsw_manifest()?),
    ])
}

/// Writes every target's seeds under `out/<target>/`.
pub fn write_all(repo: &Path, out: &Path) -> Result<usize, String> {
    let mut written = 0;
    for (target, seeds) in all(repo)? {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, bytes) in seeds {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// Varied requests as business gets them, and the split requests it makes
/// of them: known, cold and non-numeric users, both tenants' constraints
/// and layers, page sizes, cursors, histories with unknown ids, devices,
/// features, payloads and an explain.
fn requests() -> Vec<(pb::GetFeedRequest, pb::SplitRequest)> {
    let items = u64::from(crate::HANDLER_ITEMS);
    (0..12usize)
        .map(|i| {
            let user_id = match i % 4 {
                0 => format!("guest-{i}"),
                1 => (20_000 + i).to_string(),
                _ => ((i * 37) % crate::HANDLER_USERS as usize).to_string(),
            };
            let recent: Vec<u64> = (0..(i * 3 % 13) as u64)
                .map(|k| (i as u64 * 131 + k * 977) % items)
                .chain((i % 5 == 0).then_some(9_999_999))
                .collect();
            let events = recent
                .iter()
                .enumerate()
                .map(|(k, id)| pb::Event {
                    item_id: *id,
                    kind: (1 + k % 5) as i32,
                    ts_ms: 1_760_000_000_000 - (k as i64) * 60_000,
                    dwell_s: (k % 30) as f32 * 0.5,
                })
                .collect();
            let features: BTreeMap<String, String> = [
                ("hour".to_owned(), (i % 24).to_string()),
                ("country".to_owned(), ["us", "de", "br"][i % 3].to_owned()),
            ]
            .into_iter()
            .collect();
            let context = pb::UserContext {
                recent_items: recent,
                events,
                device: Some(pb::Device {
                    os: ["android", "ios", "web"][i % 3].into(),
                    model: format!("model-{}", i % 11),
                    locale: "en-GB".into(),
                    network: "wifi".into(),
                }),
                features,
                blob: vec![i as u8; (i % 3) * 64].into(),
            };
            let page_size = [10, 1, 20, 50, 0, 7][i % 6];
            let cursor = ["", "o10", "o3"][i % 3].to_owned();
            let explain = i == 5;
            let lite = i % 2 == 1;
            let feed = pb::GetFeedRequest {
                user_id: user_id.clone(),
                page_size,
                cursor,
                context: Some(proxy_api::PassThrough::new(context.clone())),
                explain,
            };
            let split = pb::SplitRequest {
                user_id,
                limit: page_size + 11,
                context: Some(proxy_api::PassThrough::new(context)),
                layers: if lite {
                    vec!["ranking".into()]
                } else {
                    Vec::new()
                },
                explain,
                constraints: Some(pb::Constraints {
                    allowed_categories: if lite {
                        ["news", "sports", "music"].map(String::from).to_vec()
                    } else {
                        Vec::new()
                    },
                    blocked_creators: if i % 4 == 3 {
                        vec!["creator-00007".into()]
                    } else {
                        Vec::new()
                    },
                }),
                page_size,
            };
            (feed, split)
        })
        .collect()
}

/// The shipped topologies' config files.
fn configs(dir: &Path) -> Result<Seeds, String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "toml") {
                let name = path
                    .strip_prefix(&dir)
                    .map_err(|e| e.to_string())?
                    .display()
                    .to_string();
                let parent = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                out.push((format!("{parent}-{name}"), bytes));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(format!("no .toml under {}", dir.display()));
    }
    Ok(out)
}

/// The files of a world directory, in the order the world target unpacks them.
pub const WORLD_FILES: [&str; 5] = [
    "world.json",
    "items.csv",
    "item_embeddings.f32",
    "user_embeddings.f32",
    "interactions.csv",
];

/// A small world saved by [`world::World::save`], packed, and the same
/// with the interaction log left out.
fn world_files() -> Result<Seeds, String> {
    let world = world::World::generate(&world::WorldConfig {
        items: 100,
        users: 4,
        categories: 3,
        creators: 10,
        dims: 2,
        ..world::WorldConfig::default()
    });
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    world.save(dir.path()).map_err(|e| e.to_string())?;
    let files = WORLD_FILES
        .iter()
        .map(|n| std::fs::read(dir.path().join(n)).map_err(|e| format!("{n}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    check_packs(&parts)?;
    Ok(vec![
        ("seed-world".into(), pack(&parts)),
        ("seed-no-interactions".into(), pack(&parts[..4])),
    ])
}

/// The shipped model versions trained on a small world.
fn models() -> Result<Seeds, String> {
    let world = small_world();
    finerank::TrainParams::versions()
        .iter()
        .map(|p| {
            let model = finerank::train(&world, p);
            let text = serde_json::to_vec_pretty(&model).map_err(|e| e.to_string())?;
            Ok((format!("seed-{}", p.version), text))
        })
        .collect()
}

/// The i2i table of [`small_world`], saved and packed: once as saved
/// (mode byte 0) and once for the checksum-fixing mode (byte 1).
fn i2i() -> Result<Seeds, String> {
    let world = small_world();
    let flat = recall::FlatIndex::build(&world);
    let table = recall::I2iTable::build(&world, &flat, I2I_NEIGHBOURS);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    table.save(dir.path(), &world).map_err(|e| e.to_string())?;
    let manifest = std::fs::read(dir.path().join("i2i.json")).map_err(|e| e.to_string())?;
    let data = std::fs::read(dir.path().join("i2i.bin")).map_err(|e| e.to_string())?;
    check_packs(&[&manifest, &data])?;
    let body = pack(&[&manifest, &data]);
    Ok(vec![
        ("seed-as-saved".into(), [&[0u8][..], &body].concat()),
        ("seed-checksum-fixed".into(), [&[1u8][..], &body].concat()),
    ])
}

/// The manifest of the HNSW index of [`small_world`] (the target builds
/// the same index's graph files once per process).
fn hnsw_manifest() -> Result<Seeds, String> {
    let world = small_world();
    let index = recall::AnnIndex::build(&world, HNSW_PARAMS);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    index
        .save(dir.path(), &world, HNSW_PARAMS)
        .map_err(|e| e.to_string())?;
    let manifest = std::fs::read(dir.path().join(HNSW_MANIFEST)).map_err(|e| e.to_string())?;
    Ok(vec![("seed-index".into(), manifest)])
}

/// Packed files must unpack to themselves: no file may hold the mark.
fn check_packs(parts: &[&[u8]]) -> Result<(), String> {
    if crate::unpack(&pack(parts)) == parts {
        Ok(())
    } else {
        Err("a seed file holds the pack mark".into())
    }
}
