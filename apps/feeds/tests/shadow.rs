//! Shadow traffic on real processes: a front serves every request from its
//! primary target and sends a copy to a shadow target off the request path;
//! the answers are compared field by field, with the primary's own noise
//! filtered out, and read back with `feeds diff-report`.
//!
//! ```text
//! client -> front A [monolith]  split: local, shadow -> pods  [split]->[rerank]->[finerank]->[recall]
//! client -> front B [monolith]  split: pods,  shadow -> local        (the same pods)
//! client -> front E [monolith, exploring] split: local, shadow -> back E [split..recall, exploring]
//! client -> front L [monolith]  split: local, shadow -> back L [split..recall, rerank.lambda 0.3]
//! client -> front D [monolith]  split: local, shadow -> back D (stopped: SIGSTOP)
//! ```

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, SERVING, free_addr, sample, scrape, wait_health};
use proxy_api::diff::Verdict;
use proxy_api::pb;
use proxy_api::shadow::{Report, TargetReport};

/// `[split.defaults]` lines that make every request explore three slots.
const EXPLORE: &str = "[split.defaults]\n\"finerank.explore\" = \"3\"\n";
/// `[split.defaults]` lines that change rerank's trade-off for every request.
const LAMBDA: &str = "[split.defaults]\n\"rerank.lambda\" = \"0.3\"\n";

/// Thirteen processes share the test machine's cores here, and each one's
/// adaptive admission limit would read the others' CPU use as a queue of
/// its own and refuse some of the eight clients' requests; this test is
/// about shadows, so every process admits up to the fixed ceiling.
const FIXED: &str = "concurrency_limit = \"fixed\"\n";

fn stage(listen: SocketAddr, host: &str, next: Option<(&str, SocketAddr)>, extra: &str) -> String {
    let remote = next
        .map(|(stage, addr)| format!("[remote.{stage}]\nendpoints = [\"http://{addr}\"]\n"))
        .unwrap_or_default();
    format!("[process]\nlisten = \"{listen}\"\nhost = [{host}]\n{FIXED}\n{remote}\n{extra}")
}

/// A monolith front whose calls to split go to `primary` with a copy to
/// `shadow` (`local` or `default`, the pool at `pods`).
/// `bounds` is the `[shadow]` section's `max_pending` and `deadline_ms`.
fn front(
    listen: SocketAddr,
    metrics: SocketAddr,
    pods: SocketAddr,
    (primary, shadow): (&str, &str),
    bounds: (usize, u64),
    extra: &str,
) -> String {
    let (pending, deadline) = bounds;
    format!(
        "[process]\nlisten = \"{listen}\"\n{FIXED}\n\
         [remote.split]\nendpoints = [\"http://{pods}\"]\nhealth_interval_ms = 200\n\n\
         [[routes.split]]\ntarget = \"{primary}\"\nshadow = {{ target = \"{shadow}\", rate = 1.0, noise = 0.2 }}\n\n\
         [shadow]\nmax_pending = {pending}\nconcurrency = 4\ndeadline_ms = {deadline}\n\n\
         [telemetry]\nmetrics_listen = \"{metrics}\"\n\n{extra}"
    )
}

/// `n` valid requests (known and cold users, both tenants, pages of 5 to
/// 20), sent by `clients` tasks; returns how many failed.
async fn drive(addr: SocketAddr, n: usize, clients: usize) -> usize {
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut client = common::business(addr).await;
            let mut failed = 0;
            for i in (c..n).step_by(clients) {
                let mut request = tonic::Request::new(pb::GetFeedRequest {
                    user_id: match i % 7 {
                        0 => format!("guest-{i}"),
                        _ => ((i * 37) % common::TEST_USERS as usize).to_string(),
                    },
                    page_size: 5 + (i % 16) as u32,
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(20));
                if i % 4 == 3 {
                    request.metadata_mut().insert(
                        "x-tenant",
                        tonic::metadata::MetadataValue::from_static("lite"),
                    );
                }
                if let Err(status) = client.get_feed(request).await {
                    if failed == 0 {
                        eprintln!("request {i} failed: {status:?}");
                    }
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("client task");
    }
    failed
}

/// The shadow report of the front whose metrics are at `metrics`, once
/// every copy taken has been compared (or has failed).
async fn report(
    metrics: SocketAddr,
    expected: u64,
) -> (TargetReport, std::collections::BTreeMap<String, u64>) {
    let addr = format!("http://{metrics}");
    let started = std::time::Instant::now();
    loop {
        let report: Report = feeds::fetch_diff_report(&addr).await.expect("report");
        let t = report.targets.iter().find(|t| t.stage == "split").cloned();
        let done = t.as_ref().map_or(0, |t| {
            t.tally.compared + t.tally.failed + report.dropped.values().sum::<u64>()
        });
        if done >= expected || started.elapsed() > Duration::from_secs(120) {
            return (t.expect("split was shadowed"), report.dropped);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn significant(t: &TargetReport) -> Vec<String> {
    t.fields
        .iter()
        .filter(|f| f.verdict == Verdict::Significant)
        .map(|f| {
            format!(
                "{} ({:.1}% vs noise {:.1}%)",
                f.field,
                f.raw_rate * 100.0,
                f.noise_rate * 100.0
            )
        })
        .collect()
}

#[tokio::test]
async fn shadows_compare_without_touching_the_served_answers() {
    // The per-stage pods.
    let (s, r, f, c) = (free_addr(), free_addr(), free_addr(), free_addr());
    let _pods = [
        Proc::start("pod-recall", c, &stage(c, "\"recall\"", None, "")),
        Proc::start(
            "pod-finerank",
            f,
            &stage(f, "\"finerank\"", Some(("recall", c)), ""),
        ),
        Proc::start(
            "pod-rerank",
            r,
            &stage(r, "\"rerank\"", Some(("finerank", f)), ""),
        ),
        Proc::start(
            "pod-split",
            s,
            &stage(s, "\"split\"", Some(("rerank", r)), ""),
        ),
    ];
    // Backs that host split and everything below in one process.
    let all_below = "\"split\", \"rerank\", \"finerank\", \"recall\"";
    let (be, bl, bd) = (free_addr(), free_addr(), free_addr());
    let _back_e = Proc::start("back-explore", be, &stage(be, all_below, None, EXPLORE));
    let _back_l = Proc::start("back-lambda", bl, &stage(bl, all_below, None, LAMBDA));
    let back_d = Proc::start("back-down", bd, &stage(bd, all_below, None, ""));
    // The fronts. Copies may queue (the pods are slower than the monolith)
    // but must all be compared, except at the front whose shadow hangs.
    let (patient, hurried) = ((8_192, 120_000), (16, 300));
    let fronts = [
        ("a", s, ("local", "default"), patient, ""),
        ("b", s, ("default", "local"), patient, ""),
        ("e", be, ("local", "default"), patient, EXPLORE),
        ("l", bl, ("local", "default"), patient, ""),
        ("d", bd, ("local", "default"), hurried, ""),
    ];
    let mut procs = Vec::new();
    for (name, pods, route, bounds, extra) in fronts {
        let (listen, metrics) = (free_addr(), free_addr());
        let toml = front(listen, metrics, pods, route, bounds, extra);
        procs.push((
            Proc::start(&format!("front-{name}"), listen, &toml),
            metrics,
        ));
    }
    for addr in [s, r, f, c, be, bl, bd]
        .into_iter()
        .chain(procs.iter().map(|(p, _)| p.addr))
    {
        wait_health(addr, "", SERVING, Duration::from_secs(120)).await;
    }
    // The pools are healthy once probed (every 200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let [(a, a_m), (b, b_m), (e, e_m), (l, l_m), (d, d_m)] = &procs[..] else {
        unreachable!("five fronts")
    };

    // Five-pod behind the monolith, and the reverse: the same answers
    // (5,000 requests each way).
    let n = 5_000;
    for (front, metrics, what) in [
        (a, a_m, "pods behind the monolith"),
        (b, b_m, "the monolith behind pods"),
    ] {
        assert_eq!(drive(front.addr, n, 8).await, 0, "{what}: failed requests");
        let (t, dropped) = report(*metrics, n as u64).await;
        assert_eq!(
            t.tally.compared, n as u64,
            "{what}: every copy compared: {:?}, dropped {dropped:?}",
            t.tally
        );
        assert!(t.tally.noise_compared > 0, "{what}: no noise measured");
        assert_eq!(t.tally.failed, 0, "{what}: {:?}", t.tally);
        assert!(significant(&t).is_empty(), "{what}: {:?}", significant(&t));
        assert!(
            t.fields.iter().all(|f| f.raw_rate == 0.0),
            "{what}: parity says every field is equal: {:?}",
            t.fields
        );
    }

    // Exploration on both sides: answers differ, but no more than the
    // primary differs from itself.
    assert_eq!(drive(e.addr, 1_500, 8).await, 0);
    let (t, _) = report(*e_m, 1_500).await;
    let items = t
        .fields
        .iter()
        .find(|f| f.field == "items.item_id")
        .expect("exploring answers differ in their items");
    assert!(items.raw_rate > 0.0 && items.noise_rate > 0.0, "{items:?}");
    assert!(
        significant(&t).is_empty(),
        "exploration is noise: {:?}",
        t.fields
    );

    // A real difference: the shadow ranks with another lambda.
    assert_eq!(drive(l.addr, 600, 8).await, 0);
    let (t, _) = report(*l_m, 600).await;
    let items = t
        .fields
        .iter()
        .find(|f| f.field == "items.item_id")
        .expect("items differ");
    assert_eq!(items.verdict, Verdict::Significant, "{:?}", t.fields);
    assert!(items.raw_rate > 0.2, "{items:?}");
    // `feeds diff-report` prints it, with its rate.
    let out = std::process::Command::new(common::EXE)
        .args(["diff-report", "--addr", &format!("http://{l_m}")])
        .output()
        .expect("diff-report runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|line| line.contains("items.item_id")
            && line.contains("significant")
            && line.contains('%')),
        "{text}"
    );

    // A shadow that hangs: the served requests never notice, and the copies
    // that could not be made or finished are counted.
    back_d.signal(nix::sys::signal::Signal::SIGSTOP);
    assert_eq!(
        drive(d.addr, 400, 8).await,
        0,
        "a hung shadow failed served requests"
    );
    let text = scrape(*d_m).await;
    let dropped = sample(&text, "feeds_shadow_dropped_total", &["stage=\"split\""]);
    back_d.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(dropped > 0.0, "no dropped copies counted:\n{text}");
}
