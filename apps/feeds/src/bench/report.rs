//! The results folder: `results.json` (everything), `report.md` (tables and
//! targets), `cpu_per_request.svg` and `latency.svg`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::{BenchError, BenchOptions, ConfigResult, LocalHop, Mode, RssResult, Settings};

/// The machine the bench ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// CPU model name.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`, if a compiler is on the PATH.
    pub rustc: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
}

impl Machine {
    /// This machine.
    pub(crate) fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc,
            memory_mib,
        }
    }
}

/// One target of the issue, with the measured ratio.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// The bound.
    pub bound: String,
    /// The measured value.
    pub measured: String,
    /// Whether the bound holds; `None` when it could not be measured.
    pub met: Option<bool>,
}

/// The hop bench's allocation figures, from `target/hop/allocations.json`
/// next to the `feeds` executable's profile directory.
fn hop_allocations(exe: &Path) -> std::collections::BTreeMap<String, f64> {
    exe.parent()
        .and_then(Path::parent)
        .map(|target| target.join("hop").join("allocations.json"))
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// One payload's framework costs (ms of CPU per request).
#[derive(Clone, Debug, Serialize)]
pub struct Framework {
    /// User-context payload, KB.
    pub payload_kb: usize,
    /// Monolith CPU per request.
    pub monolith_ms: f64,
    /// The monolith's stages' own time per request.
    pub monolith_own_ms: f64,
    /// The one-hop bare tonic echo (the monolith's floor), at the
    /// monolith's closed-loop throughput.
    pub one_hop_ms: Option<f64>,
    /// The same echo at its own closed-loop peak (10 to 20 times the
    /// monolith's rate, so fewer wake-ups and syscalls per request).
    pub one_hop_peak_ms: Option<f64>,
    /// Five-pod CPU per request.
    pub five_pod_ms: f64,
    /// Five-pod's stages' own time per request.
    pub five_pod_own_ms: f64,
    /// The five-process echo chain (five-pod's floor), at five-pod's
    /// closed-loop throughput.
    pub echo_chain_ms: Option<f64>,
    /// The same chain at its own closed-loop peak.
    pub echo_chain_peak_ms: Option<f64>,
    /// Five-pod's split process, its share of the CPU per request.
    pub split_ms: f64,
    /// The same with pass-through off (`five-pod-eager`).
    pub split_eager_ms: Option<f64>,
}

impl Framework {
    /// Monolith CPU less its stages' own time.
    pub fn monolith_framework_ms(&self) -> f64 {
        self.monolith_ms - self.monolith_own_ms
    }

    /// Five-pod CPU less its stages' own time.
    pub fn five_pod_framework_ms(&self) -> f64 {
        self.five_pod_ms - self.five_pod_own_ms
    }
}

/// Everything one bench run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command that produced it.
    pub command: String,
    /// Smoke, quick or full.
    pub mode: Mode,
    /// The settings of that mode.
    pub settings: Settings,
    /// Every configuration.
    pub configs: Vec<ConfigResult>,
    /// Peak memory per topology and corpus size.
    pub rss: Vec<RssResult>,
    /// Direct call vs local binding, in-process.
    pub local_hop: LocalHop,
    /// Heap allocations per call of each hop path, as the hop bench
    /// (`cargo bench -p proxy-api --bench hop`) last measured them; empty
    /// when it has not run in this target directory.
    pub hop_allocations: std::collections::BTreeMap<String, f64>,
    /// The targets and how they fared.
    pub targets: Vec<Target>,
}

impl Report {
    pub(super) fn new(
        opts: &BenchOptions,
        settings: Settings,
        configs: Vec<ConfigResult>,
        rss: Vec<RssResult>,
        local_hop: LocalHop,
    ) -> Self {
        let mut report = Report {
            machine: Machine::probe(),
            command: opts.command.clone(),
            mode: opts.mode,
            settings,
            configs,
            rss,
            local_hop,
            hop_allocations: hop_allocations(&opts.exe),
            targets: Vec::new(),
        };
        report.targets = report.targets();
        report
    }

    /// The configuration of `topology` at the largest corpus and the payload
    /// closest to 16 KB.
    fn reference(&self, topology: &str) -> Option<&ConfigResult> {
        let items = self.configs.iter().map(|c| c.items).max()?;
        self.configs
            .iter()
            .filter(|c| c.topology == topology && c.items == items)
            .min_by_key(|c| c.payload_kb.abs_diff(16))
    }

    /// `topology` at the largest corpus and `kb`.
    fn at(&self, topology: &str, kb: usize) -> Option<&ConfigResult> {
        let items = self.configs.iter().map(|c| c.items).max()?;
        self.configs
            .iter()
            .find(|c| c.topology == topology && c.items == items && c.payload_kb == kb)
    }

    /// The payloads of the largest corpus, ascending.
    fn payloads(&self) -> Vec<usize> {
        let items = self.configs.iter().map(|c| c.items).max().unwrap_or(0);
        let mut kbs: Vec<usize> = self
            .configs
            .iter()
            .filter(|c| c.items == items && c.topology == "monolith")
            .map(|c| c.payload_kb)
            .collect();
        kbs.sort_unstable();
        kbs.dedup();
        kbs
    }

    /// Every payload's framework costs: each topology's CPU per request
    /// less its stages' own time, next to its bare-tonic floor.
    pub fn framework(&self) -> Vec<Framework> {
        self.payloads()
            .into_iter()
            .filter_map(|kb| {
                let mono = self.at("monolith", kb)?;
                let five = self.at("five-pod", kb)?;
                let own = |c: &ConfigResult| c.stage_self_us.values().sum::<f64>() / 1000.0;
                let cpu = |c: &ConfigResult| c.cpu_ms_per_req.median;
                // The floor at its topology's rate (older results: at its peak).
                let floor = |c: &ConfigResult| c.matched_cpu_ms_per_req.unwrap_or_else(|| cpu(c));
                let split = |c: &ConfigResult| {
                    let share = c.runs.iter().map(|r| {
                        r.process_share
                            .iter()
                            .find(|(p, _)| p.ends_with("split.toml"))
                            .map_or(0.0, |(_, s)| *s)
                            * r.cpu_ms_per_req
                    });
                    super::Stat::of(share.collect()).median
                };
                Some(Framework {
                    payload_kb: kb,
                    monolith_ms: cpu(mono),
                    monolith_own_ms: own(mono),
                    one_hop_ms: self.at("echo-one-hop", kb).map(floor),
                    one_hop_peak_ms: self.at("echo-one-hop", kb).map(cpu),
                    five_pod_ms: cpu(five),
                    five_pod_own_ms: own(five),
                    echo_chain_ms: self.at("echo-chain", kb).map(floor),
                    echo_chain_peak_ms: self.at("echo-chain", kb).map(cpu),
                    split_ms: split(five),
                    split_eager_ms: self.at(super::FIVE_POD_EAGER, kb).map(split),
                })
            })
            .collect()
    }

    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let hop = self.local_hop;
        for (name, ns) in [
            (
                "serving-path local hop over a direct call (deadline checked, local calls not observed)",
                hop.local_unobserved_ns,
            ),
            (
                "serving-path local hop over a direct call (deadline checked, observed: the default)",
                hop.local_ns,
            ),
        ] {
            let added = ns - hop.direct_ns;
            out.push(Target {
                name: name.into(),
                bound: "<= 50 ns (allocations: see `cargo bench -p proxy-api`)".into(),
                measured: format!("{added:.1} ns ({ns:.1} vs {:.1} ns)", hop.direct_ns),
                met: Some(added <= 50.0),
            });
        }
        for f in self.framework() {
            let kb = f.payload_kb;
            if let Some(floor) = f.one_hop_ms {
                let r = f.monolith_framework_ms() / floor.max(1e-9);
                out.push(Target {
                    name: format!(
                        "monolith framework cost (CPU - stages' own) / one-hop bare tonic at the monolith's rate ({kb} KB)"
                    ),
                    bound: "<= 1.1".into(),
                    measured: format!(
                        "{r:.3} (({:.3} - {:.3}) / {floor:.3} ms)",
                        f.monolith_ms, f.monolith_own_ms
                    ),
                    met: Some(r <= 1.1),
                });
            }
            if let Some(floor) = f.echo_chain_ms {
                let bound = if kb >= 16 { 1.0 } else { 1.05 };
                let r = f.five_pod_framework_ms() / floor.max(1e-9);
                out.push(Target {
                    name: format!(
                        "five-pod framework cost (CPU - stages' own) / echo chain at five-pod's rate ({kb} KB)"
                    ),
                    bound: format!("<= {bound:.2}"),
                    measured: format!(
                        "{r:.3} (({:.3} - {:.3}) / {floor:.3} ms)",
                        f.five_pod_ms, f.five_pod_own_ms
                    ),
                    met: Some(r <= bound),
                });
            }
            if let (true, Some(eager)) = (kb == 16 || kb == 64, f.split_eager_ms) {
                let r = f.split_ms / eager.max(1e-9);
                out.push(Target {
                    name: format!(
                        "five-pod split process CPU per request, pass-through / decoding at every hop ({kb} KB)"
                    ),
                    bound: "<= 0.5".into(),
                    measured: format!("{r:.3} ({:.3} / {eager:.3} ms)", f.split_ms),
                    met: Some(r <= 0.5),
                });
            }
        }
        let (Some(mono), echo) = (self.reference("monolith"), self.reference("echo-chain")) else {
            return out;
        };
        // Per-tenant: each tenant's traffic costs what its placement costs alone.
        for (row, reference, what) in [
            (
                "per-tenant-lite",
                "monolith-lite",
                "lite traffic, vs the monolith under the same",
            ),
            (
                "per-tenant-default",
                "five-pod",
                "default traffic, vs five-pod",
            ),
        ] {
            if let (Some(r), Some(base)) = (self.reference(row), self.reference(reference)) {
                let ratio = r.cpu_ms_per_req.median / base.cpu_ms_per_req.median.max(1e-9);
                out.push(Target {
                    name: format!("per-tenant CPU per request, {what}"),
                    bound: "within 15% (0.85..1.15)".into(),
                    measured: format!(
                        "{ratio:.3} ({:.3} / {:.3} ms)",
                        r.cpu_ms_per_req.median, base.cpu_ms_per_req.median
                    ),
                    met: Some((0.85..=1.15).contains(&ratio)),
                });
            }
        }
        // Checks on the harness itself.
        let busiest = self
            .configs
            .iter()
            .map(|c| c.loadgen_cpu_ms_per_req * c.throughput.median / 1000.0)
            .fold(0.0, f64::max);
        out.push(Target {
            name: "check: load generator is not the bottleneck (its CPU at peak throughput)".into(),
            bound: "< 0.5 core".into(),
            measured: format!("{busiest:.2} core"),
            met: Some(busiest < 0.5),
        });
        if let Some(echo) = echo {
            let p50 = echo.open_latency_ms[0].median;
            out.push(Target {
                name: "check: TCP_NODELAY in effect (echo chain open-loop p50; Nagle with delayed ACK adds ~40 ms a hop)".into(),
                bound: "< 20 ms for 4 hops".into(),
                measured: format!("{p50:.2} ms"),
                met: Some(p50 < 20.0),
            });
        }
        let items = mono.items;
        let rss = |t: &str| {
            self.rss
                .iter()
                .find(|r| r.topology == t && r.items == items)
                .map(|r| r.total_mib)
        };
        if let (Some(m), Some(f)) = (rss("monolith"), rss("five-pod")) {
            let r = m / f.max(1e-9);
            out.push(Target {
                name: "monolith / five-pod peak RSS".into(),
                bound: "<= 0.5".into(),
                measured: format!("{r:.3} ({m:.0} / {f:.0} MiB)"),
                met: Some(r <= 0.5),
            });
        }
        out
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Tandem bench ({:?})\n", self.mode);
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Machine: {} cores, {}, {} MiB, Linux {}, {}\n",
            m.cores, m.cpu, m.memory_mib, m.kernel, m.rustc
        );
        let st = &self.settings;
        let _ = writeln!(
            s,
            "Each configuration: {} runs of a {} s closed loop ({} clients) and a {} s open loop ({} req/s, or half the closed loop's throughput when that is lower); median [min..max]. Tokio worker budget {} per topology. Users {}.\n",
            st.runs, st.closed_s, st.concurrency, st.open_s, st.rate, st.worker_budget, st.users
        );
        let _ = writeln!(
            s,
            "## Targets\n\n| target | bound | measured | met |\n| --- | --- | --- | --- |"
        );
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "n/a",
            };
            let _ = writeln!(s, "| {} | {} | {} | {met} |", t.name, t.bound, t.measured);
        }
        let _ = writeln!(
            s,
            "\n## Framework cost\n\nCPU per request less the stages' own time, next to the bare-tonic floor each topology is compared with: the one-hop echo for the monolith, the five-process echo chain for five-pod. Each floor is measured at the closed-loop throughput of the topology it is compared with (an open loop at that rate; the `floor` columns), because CPU per request falls as the rate rises (fewer wake-ups and syscalls per request) and the echoes' own peaks are 10 to 20 times the topologies'; the floors at the echoes' own peaks stand beside them. The monolith / five-pod ratio depends on how heavy the stages are, so their own time stands beside it. The split column is five-pod's split process (its share of the CPU per request), with pass-through and with every hop decoding the context (`five-pod-eager`). ms per request.\n\n| payload | monolith | own | framework | one-hop floor | one-hop at its peak | five-pod | own | framework | echo chain floor | echo chain at its peak | monolith / five-pod | split | split, decoding |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
        for f in self.framework() {
            let _ = writeln!(
                s,
                "| {} KB | {:.3} | {:.3} | {:.3} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {:.3} | {:.3} | {} |",
                f.payload_kb,
                f.monolith_ms,
                f.monolith_own_ms,
                f.monolith_framework_ms(),
                opt(f.one_hop_ms),
                opt(f.one_hop_peak_ms),
                f.five_pod_ms,
                f.five_pod_own_ms,
                f.five_pod_framework_ms(),
                opt(f.echo_chain_ms),
                opt(f.echo_chain_peak_ms),
                f.monolith_ms / f.five_pod_ms.max(1e-9),
                f.split_ms,
                opt(f.split_eager_ms),
            );
        }
        let _ = writeln!(
            s,
            "\n## Per-hop allocations\n\nHeap allocations per call, from `cargo bench -p proxy-api --bench hop` (its last run in this target directory); the serving-path local hop is timed above.\n"
        );
        if self.hop_allocations.is_empty() {
            let _ = writeln!(
                s,
                "Not measured: run `cargo bench -p proxy-api --bench hop` first.\n"
            );
        } else {
            let _ = writeln!(s, "| path | allocations per call |\n| --- | --- |");
            for (k, v) in &self.hop_allocations {
                let _ = writeln!(s, "| {k} | {v:.2} |");
            }
        }
        let _ = writeln!(
            s,
            "\n## Results\n\n| items | payload | topology | CPU ms/req | throughput req/s | open req/s | open p50 ms | p90 | p99 | p99.9 | errors | loadgen CPU ms/req |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let range = |x: &super::Stat| format!("{:.3} [{:.3}..{:.3}]", x.median, x.min, x.max);
        for c in &self.configs {
            let errors: u64 = c.errors.values().sum();
            let _ = writeln!(
                s,
                "| {} | {} KB | {} | {} | {:.0} [{:.0}..{:.0}] | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {errors} | {:.3} |",
                c.items,
                c.payload_kb,
                c.topology,
                range(&c.cpu_ms_per_req),
                c.throughput.median,
                c.throughput.min,
                c.throughput.max,
                c.open_rate,
                c.open_latency_ms[0].median,
                c.open_latency_ms[1].median,
                c.open_latency_ms[2].median,
                c.open_latency_ms[3].median,
                c.loadgen_cpu_ms_per_req
            );
        }
        let _ = writeln!(
            s,
            "\n## Peak memory\n\n| items | topology | total MiB | per process |\n| --- | --- | --- | --- |"
        );
        for r in &self.rss {
            let per: Vec<String> = r
                .per_process_mib
                .iter()
                .map(|(p, v)| format!("{p}: {v:.0}"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} |",
                r.items,
                r.topology,
                r.total_mib,
                per.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\n## Where the CPU goes\n\nShare of each process in its topology's CPU (closed loop, first run), and each stage's own CPU per request, reported by the stages during the closed loop:\n"
        );
        for c in &self.configs {
            let share: Vec<String> = c
                .runs
                .first()
                .map(|r| {
                    r.process_share
                        .iter()
                        .map(|(p, v)| format!("{p} {:.0}%", v * 100.0))
                        .collect()
                })
                .unwrap_or_default();
            let own: Vec<String> = c
                .stage_self_us
                .iter()
                .map(|(k, v)| format!("{k} {v:.0} µs"))
                .collect();
            let _ = writeln!(
                s,
                "- {} items, {} KB, {}: {}; own: {}",
                c.items,
                c.payload_kb,
                c.topology,
                share.join(", "),
                if own.is_empty() {
                    "n/a".into()
                } else {
                    own.join(", ")
                }
            );
        }
        s
    }
}

fn topology_colour(name: &str) -> RGBColor {
    match name {
        "monolith" => RGBColor(31, 119, 180),
        "five-pod" => RGBColor(214, 39, 40),
        "mixed" => RGBColor(44, 160, 44),
        "five-pod-eager" => RGBColor(255, 127, 14),
        "echo-one-hop" => RGBColor(148, 103, 189),
        _ => RGBColor(127, 127, 127),
    }
}

fn chart_cpu(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let items = report.configs.iter().map(|c| c.items).max().unwrap_or(0);
    let rows: Vec<&ConfigResult> = report.configs.iter().filter(|c| c.items == items).collect();
    let max_kb = rows.iter().map(|c| c.payload_kb).max().unwrap_or(1) as f64;
    let max_cpu = rows
        .iter()
        .map(|c| c.cpu_ms_per_req.max)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Server CPU per request vs user-context payload ({items} items)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.5f64..max_kb * 1.5).log_scale(), 0.0..max_cpu)?;
    chart
        .configure_mesh()
        .x_desc("payload (KB)")
        .y_desc("CPU ms / request")
        .draw()?;
    for topology in [
        "monolith",
        "five-pod",
        super::FIVE_POD_EAGER,
        "mixed",
        "echo-chain",
        "echo-one-hop",
    ] {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|c| c.topology == topology)
            .map(|c| (c.payload_kb as f64, c.cpu_ms_per_req.median))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.is_empty() {
            continue;
        }
        let colour = topology_colour(topology);
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(topology)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn chart_latency(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let items = report.configs.iter().map(|c| c.items).max().unwrap_or(0);
    let rows: Vec<&ConfigResult> = ["monolith", "five-pod", "mixed", "echo-chain"]
        .iter()
        .filter_map(|t| report.reference(t))
        .collect();
    let kb = rows.first().map_or(0, |c| c.payload_kb);
    let max = rows
        .iter()
        .map(|c| c.open_latency_ms[3].median)
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.15;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let labels = ["p50", "p90", "p99", "p99.9"];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Open-loop latency percentiles ({kb} KB, {items} items, {} req/s)",
                report.settings.rate
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..3.5, 0f64..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            // Groups sit on the integers; other key points get no label.
            let i = x.round();
            match (x - i).abs() < 1e-6 && i >= 0.0 {
                true => labels
                    .get(i as usize)
                    .map_or(String::new(), |l| (*l).to_owned()),
                false => String::new(),
            }
        })
        .y_desc("ms")
        .draw()?;
    let width = 0.8 / rows.len().max(1) as f64;
    for (k, c) in rows.iter().enumerate() {
        let colour = topology_colour(&c.topology);
        chart
            .draw_series((0..4).map(|p| {
                let x0 = p as f64 - 0.4 + k as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, c.open_latency_ms[p].median)],
                    colour.filled(),
                )
            }))?
            .label(c.topology.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes `results.json`, `report.md` and the two charts into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<(), BenchError> {
    let fail = |p: &Path, e: &dyn std::fmt::Display| BenchError::Write(p.to_owned(), e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    let json = dir.join("results.json");
    let text = serde_json::to_string_pretty(report).map_err(|e| fail(&json, &e))?;
    std::fs::write(&json, text).map_err(|e| fail(&json, &e))?;
    let md = dir.join("report.md");
    let mut text = report.markdown();
    text.push_str("\n![CPU per request](cpu_per_request.svg)\n\n![Latency](latency.svg)\n");
    std::fs::write(&md, text).map_err(|e| fail(&md, &e))?;
    let cpu = dir.join("cpu_per_request.svg");
    chart_cpu(report, &cpu).map_err(|e| fail(&cpu, &e))?;
    let lat = dir.join("latency.svg");
    chart_latency(report, &lat).map_err(|e| fail(&lat, &e))?;
    Ok(())
}
