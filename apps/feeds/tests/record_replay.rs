//! Record and replay on real processes: the monolith records its calls at
//! two stage boundaries (business, the entry, and recall, deep inside);
//! `feeds replay` sends them to five-pod and mixed, where every answer is
//! equal (exit 0), and to a monolith whose experiment parameters changed,
//! where differences are reported by field (exit 1). A damaged file stops
//! the replay naming the file and the byte offset (exit 2), or is skipped
//! with `--skip-damaged`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proc, SERVING, free_addr, wait_health};

fn stage(listen: SocketAddr, host: &str, next: Option<(&str, SocketAddr)>, extra: &str) -> String {
    let remote = next
        .map(|(stage, addr)| format!("[remote.{stage}]\nendpoints = [\"http://{addr}\"]\n"))
        .unwrap_or_default();
    format!("[process]\nlisten = \"{listen}\"\nhost = [{host}]\n\n{remote}\n{extra}")
}

fn replay(files: &[PathBuf], addr: SocketAddr, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::EXE)
        .arg("replay")
        .args(files)
        .args(["--addr", &format!("http://{addr}")])
        .args(extra)
        .output()
        .expect("replay runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files(dir: &Path, stage: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("recordings")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stage}-")) && n.ends_with(".rec"))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn recorded_calls_replay_equal_elsewhere_and_differences_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("rec");
    let record = format!(
        "[record.business]\nrate = 1.0\ndir = \"{0}\"\n\n[record.recall]\nrate = 1.0\ndir = \"{0}\"\nmax_file_bytes = 262144\nmax_record_bytes = 65536\n",
        rec.display()
    );
    let m = free_addr();
    let monolith = Proc::start(
        "monolith",
        m,
        &format!("[process]\nlisten = \"{m}\"\n\n{record}"),
    );
    // Five-pod.
    let (b, s, r, f, c) = (
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let _five = [
        Proc::start("recall", c, &stage(c, "\"recall\"", None, "")),
        Proc::start(
            "finerank",
            f,
            &stage(f, "\"finerank\"", Some(("recall", c)), ""),
        ),
        Proc::start(
            "rerank",
            r,
            &stage(r, "\"rerank\"", Some(("finerank", f)), ""),
        ),
        Proc::start("split", s, &stage(s, "\"split\"", Some(("rerank", r)), "")),
        Proc::start(
            "business",
            b,
            &stage(b, "\"business\"", Some(("split", s)), ""),
        ),
    ];
    // Mixed.
    let (front, back) = (free_addr(), free_addr());
    let _mixed = [
        Proc::start(
            "back",
            back,
            &stage(back, "\"rerank\", \"finerank\", \"recall\"", None, ""),
        ),
        Proc::start(
            "front",
            front,
            &stage(front, "\"business\", \"split\"", Some(("rerank", back)), ""),
        ),
    ];
    // A monolith whose experiments rank differently.
    let changed = free_addr();
    let _changed = Proc::start(
        "changed",
        changed,
        &format!(
            "[process]\nlisten = \"{changed}\"\n\n[split.defaults]\n\"rerank.lambda\" = \"0.3\"\n"
        ),
    );
    for addr in [m, b, s, r, f, c, front, back, changed] {
        wait_health(addr, "", SERVING, Duration::from_secs(120)).await;
    }

    // Traffic at the monolith: valid and invalid requests, three tenants.
    let cases = common::cases(200);
    let outcomes = common::run_grpc(m, &cases).await;
    let served = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(served > 150, "{served} of 200 served");
    // The writer flushes when idle; give it a moment, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(monolith);
    let business = files(&rec, "business");
    let recall = files(&rec, "recall");
    assert!(
        !business.is_empty() && !recall.is_empty(),
        "{business:?} {recall:?}"
    );
    assert!(
        recall.len() > 1,
        "recall's files rotate at 256 KiB: {recall:?}"
    );

    // The entry's calls, against five-pod and mixed: all equal.
    for (addr, what) in [(b, "five-pod"), (front, "mixed")] {
        let (code, out, err) = replay(&business, addr, &[]);
        assert_eq!(code, 0, "{what}: {out}{err}");
        assert!(
            out.contains("replayed 200: 200 equal, 0 different, 0 failed"),
            "{what}: {out}"
        );
    }
    // Recall's calls, recorded inside the monolith, against five-pod's recall.
    let (code, out, err) = replay(&recall, c, &[]);
    assert_eq!(code, 0, "recall: {out}{err}");
    assert!(out.contains(" 0 different, 0 failed"), "recall: {out}");

    // Another rerank trade-off: differences in the items, by field, exit 1.
    let (code, out, _) = replay(&business, changed, &["--threshold", "0.01"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("items.item_id")),
        "the differing field is named: {out}"
    );

    // A damaged file: the error names the file and the offset.
    let damaged = dir.path().join("damaged.rec");
    let mut bytes = std::fs::read(&business[0]).expect("read");
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&damaged, &bytes).expect("write");
    let (code, out, err) = replay(std::slice::from_ref(&damaged), b, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&damaged.display().to_string()) && err.contains("byte "),
        "{err}"
    );
    let (code, out, err) = replay(std::slice::from_ref(&damaged), b, &["--skip-damaged"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    assert!(out.contains("damaged records skipped"), "{out}{err}");
    // Truncated: also named, never a panic.
    std::fs::write(&damaged, &bytes[..at]).expect("write");
    let (code, _, err) = replay(std::slice::from_ref(&damaged), b, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("truncated") && !err.contains("panicked"),
        "{err}"
    );
}
