//! `feeds`: the Tandem binary. Parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Tandem feeds recommender: one codebase, deployed as one binary or as one
/// process per stage, chosen by config.
#[derive(Parser)]
#[command(name = "feeds", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// World size overrides, applied on top of the config.
#[derive(clap::Args, Clone, Copy, Debug)]
struct WorldArgs {
    /// Items in the generated world (overrides world.items).
    #[arg(long)]
    items: Option<u32>,
    /// Users in the generated world (overrides world.users).
    #[arg(long)]
    users: Option<u32>,
}

/// Which world to use and where to write the result.
#[cfg(feature = "lab")]
#[derive(clap::Args, Clone, Debug)]
struct OutputArgs {
    /// TOML config file (its world section says which world).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Host the stages the config names and serve them over gRPC.
    ///
    /// With no --config this is the monolith: all five stages in this process,
    /// bound in-memory, served on 127.0.0.1:50051. Values layer as built-in
    /// defaults, then the --config TOML file, then FEEDS__SECTION__KEY
    /// environment variables (e.g. FEEDS__PROCESS__LISTEN=127.0.0.1:6000).
    Serve {
        /// TOML config file (see deploy/local/ for the shipped topologies).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the effective config as TOML and exit without serving.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        world: WorldArgs,
    },
    #[cfg(feature = "lab")]
    /// Measure the pipeline against the world's hidden ground truth
    /// (NDCG@20, Recall@100), next to a popularity-only baseline, and each
    /// tenant's first pages (empty, short, over a cap, diversity, coverage).
    Eval {
        /// TOML config file; its stage settings are evaluated as a monolith.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Users to evaluate, spread over the world.
        #[arg(long = "sample", default_value_t = 500)]
        sample: usize,
        /// Users whose first page is measured for every tenant (default:
        /// the --sample count).
        #[arg(long = "page-users", value_name = "N")]
        page_users: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        world: WorldArgs,
    },
    #[cfg(feature = "lab")]
    /// Train the fine-rank model versions from the world's interaction log
    /// and write them as DIR/<version>.json (load them with finerank.model_dir).
    Train(OutputArgs),
    #[cfg(feature = "lab")]
    /// Benchmark the monolith, five-pod and mixed topologies and a bare tonic
    /// echo chain as OS processes, side by side; writes JSON, Markdown and SVG.
    Bench {
        /// About 3 minutes: one payload (16 KB), a 5,000-item world.
        #[arg(long, conflicts_with = "smoke")]
        quick: bool,
        /// A few seconds on a tiny world: checks the harness, not the speed.
        #[arg(long)]
        smoke: bool,
        /// Results folder (default bench-results/<timestamp>/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Where the named topologies live.
        #[arg(long, default_value = "deploy/local")]
        dir: PathBuf,
        /// Only these user-context sizes (KB, comma-separated, each 1 to
        /// 1024) on the mode's main world, without the corpus axis: to
        /// re-measure a few rows of the sweep.
        #[arg(long, value_name = "KB,..", value_delimiter = ',')]
        kb: Option<Vec<usize>>,
    },
    #[cfg(feature = "lab")]
    /// Closed-loop load against a running deployment (the bench's request
    /// set): throughput, latency percentiles and errors. Bounded by --seconds.
    Load {
        /// The entry process.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: std::net::SocketAddr,
        /// User context per request, KB (the user's recent events; see the
        /// README's bench section).
        #[arg(long, default_value_t = 16)]
        kb: usize,
        /// Clients sending back to back.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// How long to send (at most 600).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Sent as `x-tenant`.
        #[arg(long)]
        tenant: Option<String>,
        /// Open loop instead: this many requests per second, latency from
        /// each request's intended send time.
        #[arg(long)]
        rate: Option<f64>,
        /// Also check health (service `""`) every this many ms on a
        /// connection of its own, and report its latency.
        #[arg(long)]
        health_ms: Option<u64>,
    },
    #[cfg(feature = "lab")]
    /// Start the five-pod topology with two replicas of every stage, put it
    /// under open-loop load, inject one fault at a time into one replica of
    /// each chosen stage (kill -9 and restart, SIGTERM restart, SIGSTOP for a
    /// few seconds, added latency through a TCP proxy), and report failures
    /// by status, time to the last error, requests past their deadline and
    /// latency against nominal; writes JSON, Markdown and CSV.
    Chaos {
        /// Stages whose replicas are faulted (not business: the load
        /// generator calls it directly).
        #[arg(long, value_delimiter = ',', default_value = "recall,rerank")]
        stages: Vec<String>,
        /// Faults, in order, for each stage.
        #[arg(long, value_delimiter = ',', default_value = "kill,term,stop,latency")]
        faults: Vec<feeds::chaos::Fault>,
        /// Open-loop arrival rate, requests per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Every request's deadline, ms.
        #[arg(long, default_value_t = 2_000)]
        deadline_ms: u64,
        /// Load before the nominal window, s.
        #[arg(long, default_value_t = 3.0)]
        warmup_s: f64,
        /// The nominal window before any fault, s.
        #[arg(long, default_value_t = 10.0)]
        nominal_s: f64,
        /// How long a killed replica stays down, s.
        #[arg(long, default_value_t = 2.0)]
        down_s: f64,
        /// How long a stopped replica stays stopped, s.
        #[arg(long, default_value_t = 4.0)]
        stop_s: f64,
        /// How long the latency fault lasts, s.
        #[arg(long, default_value_t = 8.0)]
        latency_s: f64,
        /// Delay added per chunk and direction, ms: MIN-MAX.
        #[arg(long, default_value = "50-200")]
        latency_ms: String,
        /// Quiet time after a faulted replica serves again, s.
        #[arg(long, default_value_t = 4.0)]
        settle_s: f64,
        /// Results folder (default chaos-results/<timestamp>/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Where five-pod/ lives.
        #[arg(long, default_value = "deploy/local")]
        dir: PathBuf,
        /// Exit non-zero when a target is missed.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        world: WorldArgs,
    },
    #[cfg(feature = "lab")]
    /// One process of the bare echo chain that `feeds bench` uses as a floor.
    #[command(hide = true)]
    Echo {
        /// The stage whose service this process serves.
        #[arg(long)]
        stage: String,
        /// Listen address.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// URL of the next stage of the chain.
        #[arg(long)]
        next: Option<String>,
    },
    #[cfg(feature = "lab")]
    /// Write the world to files (load them back with world.dir).
    World(OutputArgs),
    /// What a process's shadow copies found: per stage, shadow target and
    /// field, comparisons, raw and noise difference rates, and the verdict
    /// (read from the process's metrics endpoint, `GET /shadow`).
    DiffReport {
        /// The metrics endpoint (`telemetry.metrics_listen`), http://host:port.
        #[arg(long)]
        addr: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send recorded calls (files written by `[record.<stage>]`) again to a
    /// process hosting their stage and compare each answer with the
    /// recorded one. Exits 1 when the difference rate exceeds --threshold,
    /// 2 when a file is damaged (unless --skip-damaged).
    Replay {
        /// Recording files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The process to send them to.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Calls per second at most.
        #[arg(long)]
        rate: Option<f64>,
        /// Largest acceptable share of different or failed answers (0..=1).
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
        /// Skip damaged records (counted) instead of stopping at the first.
        #[arg(long)]
        skip_damaged: bool,
        /// Each call's deadline, ms.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call Business.GetFeed and print the page.
    Query {
        /// Address of a process serving Business.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// User id (numbers below the world's user count are known users).
        #[arg(long)]
        user: String,
        /// Tenant, sent as x-tenant; the service's default tenant if absent.
        #[arg(long)]
        tenant: Option<String>,
        /// Items on the page.
        #[arg(long, default_value_t = 10)]
        page_size: u32,
        /// Cursor from a previous page's "next cursor".
        #[arg(long, default_value = "")]
        cursor: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also print the experiment assignment and each stage's own time.
        #[arg(long)]
        explain: bool,
        /// Deadline of the whole call, in milliseconds.
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
        /// Dye the request (x-tandem-dye): it and all it calls go to pools
        /// routed for this colour. Kept only from trusted peers
        /// (process.trusted_peers).
        #[arg(long, value_name = "COLOUR")]
        dye: Option<String>,
        /// Mark the request as load-test traffic (x-tandem-stress).
        #[arg(long)]
        stress: bool,
    },
    /// Start a topology as OS processes, wait until all serve, stop them on Ctrl-C.
    Up {
        /// monolith, five-pod, mixed, per-tenant, or a directory of .toml files, or one file.
        topology: String,
        /// Where the named topologies live.
        #[arg(long, default_value = "deploy/local")]
        dir: PathBuf,
        /// Seconds to wait for every process to report SERVING.
        #[arg(long, default_value_t = 60)]
        ready_timeout_s: u64,
        /// Listen on ports the OS picks instead of the files' own (the files
        /// are copied, with every listen address and endpoint moved, into a
        /// temporary directory), so the topology can run beside another.
        #[arg(long)]
        free_ports: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its logs from its config; every other command logs plainly.
    if !matches!(cli.command, Command::Serve { .. }) {
        feeds::telemetry::init_default();
    }
    match cli.command {
        Command::Serve {
            config,
            print_config,
            world,
        } => serve(config, world, print_config),
        #[cfg(feature = "lab")]
        Command::Eval {
            config,
            sample,
            page_users,
            json,
            world,
        } => eval(config, world, sample, page_users.unwrap_or(sample), json),
        #[cfg(feature = "lab")]
        Command::Train(a) => train(a.config, a.world, &a.out),
        #[cfg(feature = "lab")]
        Command::World(a) => write_world(a.config, a.world, &a.out),
        #[cfg(feature = "lab")]
        Command::Bench {
            quick,
            smoke,
            out,
            dir,
            kb,
        } => bench(quick, smoke, out, dir, kb),
        #[cfg(feature = "lab")]
        Command::Load {
            addr,
            kb,
            concurrency,
            seconds,
            tenant,
            rate,
            health_ms,
        } => load_test(addr, kb, concurrency, seconds, tenant, rate, health_ms),
        #[cfg(feature = "lab")]
        Command::Chaos {
            stages,
            faults,
            rate,
            deadline_ms,
            warmup_s,
            nominal_s,
            down_s,
            stop_s,
            latency_s,
            latency_ms,
            settle_s,
            out,
            dir,
            strict,
            world,
        } => {
            let Some(latency_ms) = parse_range(&latency_ms) else {
                eprintln!("error: --latency-ms {latency_ms:?}: want MIN-MAX in ms, e.g. 50-200");
                return ExitCode::from(2);
            };
            let settings = feeds::chaos::Settings {
                stages,
                faults,
                rate,
                deadline_ms,
                warmup_s,
                nominal_s,
                down_s,
                stop_s,
                latency_s,
                latency_ms,
                settle_s,
                items: world.items,
                users: world.users,
            };
            chaos(settings, out, dir, strict)
        }
        #[cfg(feature = "lab")]
        Command::Echo {
            stage,
            listen,
            next,
        } => echo(&stage, listen, next),
        Command::DiffReport { addr, json } => diff_report(&addr, json),
        Command::Replay {
            files,
            addr,
            rate,
            threshold,
            skip_damaged,
            timeout_ms,
            json,
        } => replay(
            feeds::ReplayArgs {
                files,
                addr,
                rate,
                skip_damaged,
                timeout: Duration::from_millis(timeout_ms),
                diff: proxy_api::diff::DiffOptions::default(),
            },
            threshold,
            json,
        ),
        Command::Query {
            addr,
            user,
            tenant,
            page_size,
            cursor,
            json,
            explain,
            timeout_ms,
            dye,
            stress,
        } => {
            let args = feeds::QueryArgs {
                addr,
                user,
                tenant,
                page_size,
                cursor,
                explain,
                timeout: Duration::from_millis(timeout_ms),
                dye,
                stress,
            };
            query(args, json)
        }
        Command::Up {
            topology,
            dir,
            ready_timeout_s,
            free_ports,
        } => up(
            &topology,
            &dir,
            Duration::from_secs(ready_timeout_s),
            free_ports,
        ),
    }
}

fn replay(args: feeds::ReplayArgs, threshold: f64, json: bool) -> ExitCode {
    if !(0.0..=1.0).contains(&threshold) {
        eprintln!("error: --threshold {threshold}: must be a fraction (0..=1)");
        return ExitCode::from(2);
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        eprintln!("error: --rate {rate}: must be above 0");
        return ExitCode::from(2);
    }
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(feeds::replay(&args)) {
        Ok(report) => {
            match json {
                true => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                false => print!("{}", report.table(threshold)),
            }
            match report.difference_rate() > threshold {
                true => ExitCode::from(1),
                false => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn diff_report(addr: &str, json: bool) -> ExitCode {
    let result = runtime(1).and_then(|rt| {
        let report = rt.block_on(feeds::fetch_diff_report(addr))?;
        match json {
            true => println!("{}", serde_json::to_string_pretty(&report)?),
            false => print!("{}", feeds::diff_table(&report)),
        }
        Ok(())
    });
    exit(result)
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().build()?)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}

/// The world size overrides of the command line.
fn apply(config: &mut feeds::Config, world: WorldArgs) {
    if let Some(items) = world.items {
        config.world.items = items;
    }
    if let Some(users) = world.users {
        config.world.users = users;
    }
}

/// Loads the config with the world overrides; prints the error on failure.
fn load(file: Option<PathBuf>, world: WorldArgs) -> Result<(feeds::Config, feeds::Plan), ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let (mut config, _) = feeds::load(file.as_deref()).map_err(|e| fail(&e))?;
    apply(&mut config, world);
    let plan = config
        .validate()
        .map_err(|e| fail(&format!("command line: {e}")))?;
    Ok((config, plan))
}

/// Exit status of a finished command: success, or the error printed.
fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

#[cfg(feature = "lab")]
fn eval(
    file: Option<PathBuf>,
    world: WorldArgs,
    sample: usize,
    page_users: usize,
    json: bool,
) -> ExitCode {
    let (config, _) = match load(file, world) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let result = runtime(config.process.worker_threads)
        .and_then(|rt| Ok(rt.block_on(feeds::eval(&config, sample, page_users))?));
    match result {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", feeds::eval_table(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[cfg(feature = "lab")]
fn train(file: Option<PathBuf>, world: WorldArgs, out: &std::path::Path) -> ExitCode {
    let (config, _) = match load(file, world) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let result = (|| -> anyhow::Result<()> {
        let world = feeds::world(&config)?;
        std::fs::create_dir_all(out)?;
        for params in finerank::TrainParams::versions() {
            let model = finerank::train(&world, &params);
            let path = out.join(format!("{}.json", params.version));
            model.save(&path)?;
            eprintln!(
                "wrote {} ({} examples, log loss {:.4})",
                path.display(),
                model.trained.examples,
                model.trained.final_log_loss
            );
        }
        Ok(())
    })();
    exit(result)
}

#[cfg(feature = "lab")]
fn bench(
    quick: bool,
    smoke: bool,
    out: Option<PathBuf>,
    dir: PathBuf,
    kb: Option<Vec<usize>>,
) -> ExitCode {
    use feeds::bench::{BenchOptions, Mode};
    if let Some(bad) = kb.iter().flatten().find(|&&kb| kb == 0 || kb > 1024) {
        eprintln!("error: --kb {bad}: each size must be 1..=1024");
        return ExitCode::from(2);
    }
    if kb.as_ref().is_some_and(Vec::is_empty) {
        eprintln!("error: --kb: name at least one size");
        return ExitCode::from(2);
    }
    let mode = if smoke {
        Mode::Smoke
    } else if quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    let out = out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("bench-results/{secs}"))
    });
    let result = (|| -> anyhow::Result<()> {
        let opts = BenchOptions {
            mode,
            out: out.clone(),
            exe: std::env::current_exe()?,
            deploy_dir: dir,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            payloads: kb,
        };
        let report = runtime(2)?.block_on(feeds::bench::run(&opts))?;
        feeds::bench::write_report(&report, &out)?;
        print!("{}", report.markdown());
        eprintln!("results in {}", out.display());
        Ok(())
    })();
    exit(result)
}

/// `50-200` as [50, 200].
#[cfg(feature = "lab")]
fn parse_range(text: &str) -> Option<[u64; 2]> {
    let (lo, hi) = text.split_once('-')?;
    Some([lo.trim().parse().ok()?, hi.trim().parse().ok()?])
}

#[cfg(feature = "lab")]
fn chaos(
    settings: feeds::chaos::Settings,
    out: Option<PathBuf>,
    dir: PathBuf,
    strict: bool,
) -> ExitCode {
    // Bad settings are a usage error, before anything starts.
    if let Err(e) = settings.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let out = out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("chaos-results/{secs}"))
    });
    let result = (|| -> anyhow::Result<bool> {
        let opts = feeds::chaos::ChaosOptions {
            settings,
            exe: std::env::current_exe()?,
            deploy_dir: dir,
            out: out.clone(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        };
        let report = runtime(2)?.block_on(feeds::chaos::run(&opts))?;
        feeds::chaos::write_report(&report, &out)?;
        print!("{}", report.markdown());
        eprintln!("results in {}", out.display());
        Ok(report.all_met())
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) if strict => {
            eprintln!("error: a target was missed (--strict)");
            ExitCode::FAILURE
        }
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

#[cfg(feature = "lab")]
fn load_test(
    addr: std::net::SocketAddr,
    kb: usize,
    concurrency: usize,
    seconds: f64,
    tenant: Option<String>,
    rate: Option<f64>,
    health_ms: Option<u64>,
) -> ExitCode {
    if health_ms.is_some_and(|ms| ms == 0 || ms > 60_000) {
        eprintln!("error: --health-ms: must be 1..=60000");
        return ExitCode::from(2);
    }
    if let Some(rate) = rate
        && !(rate > 0.0 && rate <= 100_000.0)
    {
        eprintln!("error: --rate {rate}: must be in (0, 100000]");
        return ExitCode::from(2);
    }
    if !(seconds > 0.0 && seconds <= 600.0) {
        eprintln!("error: --seconds {seconds}: must be in (0, 600]");
        return ExitCode::from(2);
    }
    if concurrency == 0 || concurrency > 1024 {
        eprintln!("error: --concurrency {concurrency}: must be 1..=1024");
        return ExitCode::from(2);
    }
    let result = runtime(2).and_then(|rt| {
        let phase = rt.block_on(feeds::bench::load_once(
            addr,
            kb,
            concurrency,
            Duration::from_secs_f64(seconds),
            tenant,
            rate,
            health_ms.map(Duration::from_millis),
        ))?;
        println!("{}", phase.summary());
        Ok(())
    });
    exit(result)
}

#[cfg(feature = "lab")]
fn echo(stage: &str, listen: std::net::SocketAddr, next: Option<String>) -> ExitCode {
    let Some(stage) = proxy_api::Stage::from_name(stage) else {
        eprintln!("error: --stage {stage:?}: unknown stage");
        return ExitCode::from(2);
    };
    let workers = std::env::var("FEEDS__PROCESS__WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let result = runtime(workers).and_then(|rt| {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            feeds::run_echo(stage, listener, next, shutdown_signal()).await?;
            Ok(())
        })
    });
    exit(result)
}

#[cfg(feature = "lab")]
fn write_world(file: Option<PathBuf>, world: WorldArgs, out: &std::path::Path) -> ExitCode {
    let (config, _) = match load(file, world) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let result = feeds::world(&config)
        .map_err(anyhow::Error::from)
        .and_then(|w| {
            w.save(out)?;
            eprintln!("wrote the world to {}", out.display());
            // The recall index too, so serving these files needs no build.
            let started = std::time::Instant::now();
            let stage = recall::RecallStage::new(std::sync::Arc::new(w), config.recall.clone());
            let built = started.elapsed().as_secs_f32();
            let dir = recall::index_dir(out);
            stage.save_index(&dir)?;
            let what = match config.recall.ann {
                recall::AnnKind::Flat => "i2i table".to_owned(),
                recall::AnnKind::Hnsw => {
                    format!("i2i table and {} HNSW shards", config.recall.index_shards)
                }
            };
            eprintln!(
                "wrote the recall index ({what}, built in {built:.1} s) to {}",
                dir.display()
            );
            Ok(())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn serve(file: Option<PathBuf>, world: WorldArgs, print_config: bool) -> ExitCode {
    let (config, plan) = match load(file.clone(), world) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if print_config {
        return match toml_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime(config.process.worker_threads).and_then(|rt| {
        rt.block_on(async {
            let telemetry = feeds::telemetry::init(&config.telemetry, &plan)?;
            let listeners = feeds::bind(&plan)?;
            // SIGHUP loads the same file (and environment, and overrides)
            // again and applies its routes and pools.
            let reload = move || {
                let (mut config, _) = feeds::load(file.as_deref())?;
                apply(&mut config, world);
                let plan = config
                    .validate()
                    .map_err(|error| feeds::LoadError::Invalid {
                        error,
                        origin: "command line".into(),
                    })?;
                Ok((config, plan))
            };
            let result =
                feeds::run_reloading(&config, &plan, listeners, shutdown_signal(), Some(reload))
                    .await;
            telemetry.shutdown();
            result?;
            Ok(())
        })
    });
    exit(result)
}

fn toml_string(config: &feeds::Config) -> anyhow::Result<String> {
    // Through a Value, so tables are ordered after plain keys as TOML needs.
    let table = toml::Value::try_from(config)?;
    Ok(toml::to_string_pretty(&table)?)
}

fn query(args: feeds::QueryArgs, json: bool) -> ExitCode {
    let result = runtime(1).and_then(|rt| Ok(rt.block_on(feeds::get_feed_with_path(&args))?));
    match result {
        Ok((response, path)) => {
            let text = if json {
                let mut value = feeds::to_json(&response);
                if let (Some(path), Some(map)) = (&path, value.as_object_mut()) {
                    map.insert(
                        "served_by".into(),
                        path.split(',').collect::<Vec<_>>().into(),
                    );
                }
                format!("{value:#}\n")
            } else {
                let mut text = feeds::to_table(&response, args.explain);
                if let Some(path) = path {
                    text.push_str(&format!("served by: {}\n", path.replace(',', ", ")));
                }
                text
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(
    topology: &str,
    dir: &std::path::Path,
    ready_timeout: Duration,
    free_ports: bool,
) -> ExitCode {
    // Removed when `up` returns, whatever happened.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let copies = TempDir(std::env::temp_dir().join(format!("feeds-up-{}", std::process::id())));
    let result = runtime(1).and_then(|rt| {
        rt.block_on(async {
            let mut files = feeds::resolve(topology, dir)?;
            if free_ports {
                files = feeds::relocate(&files, &copies.0)?.files;
            }
            let exe = std::env::current_exe()?;
            let mut running = feeds::start(&exe, &files, &[], ready_timeout).await?;
            for m in &running.members {
                eprintln!("up: {} serving on {}", m.file.display(), m.listen);
            }
            eprintln!(
                "up: topology {topology} ready ({} processes); Ctrl-C stops it",
                running.members.len()
            );
            let early = tokio::select! {
                _ = shutdown_signal() => None,
                exited = running.wait_any_exit() => Some(exited?),
            };
            let statuses = running.stop(Duration::from_secs(15)).await?;
            for (file, status) in &statuses {
                eprintln!("up: {} exited: {status}", file.display());
            }
            if let Some((file, status)) = early {
                anyhow::bail!(
                    "{} exited unexpectedly ({status}); stopped the rest",
                    file.display()
                );
            }
            Ok(())
        })
    });
    exit(result)
}
