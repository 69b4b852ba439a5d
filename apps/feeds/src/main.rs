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
    },
    /// Start a topology as OS processes, wait until all serve, stop them on Ctrl-C.
    Up {
        /// monolith, five-pod, mixed, or a directory of .toml files, or one file.
        topology: String,
        /// Where the named topologies live.
        #[arg(long, default_value = "deploy/local")]
        dir: PathBuf,
        /// Seconds to wait for every process to report SERVING.
        #[arg(long, default_value_t = 60)]
        ready_timeout_s: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve {
            config,
            print_config,
        } => serve(config, print_config),
        Command::Query {
            addr,
            user,
            tenant,
            page_size,
            cursor,
            json,
            explain,
            timeout_ms,
        } => {
            let args = feeds::QueryArgs {
                addr,
                user,
                tenant,
                page_size,
                cursor,
                explain,
                timeout: Duration::from_millis(timeout_ms),
            };
            query(args, json)
        }
        Command::Up {
            topology,
            dir,
            ready_timeout_s,
        } => up(&topology, &dir, Duration::from_secs(ready_timeout_s)),
    }
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

fn serve(file: Option<PathBuf>, print_config: bool) -> ExitCode {
    let (config, plan) = match feeds::load(file.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
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
            let listener = feeds::bind(&plan)?;
            feeds::run(&config, &plan, listener, shutdown_signal()).await?;
            Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn toml_string(config: &feeds::Config) -> anyhow::Result<String> {
    // Through a Value, so tables are ordered after plain keys as TOML needs.
    let table = toml::Value::try_from(config)?;
    Ok(toml::to_string_pretty(&table)?)
}

fn query(args: feeds::QueryArgs, json: bool) -> ExitCode {
    let result = runtime(1).and_then(|rt| Ok(rt.block_on(feeds::get_feed(&args))?));
    match result {
        Ok(response) => {
            let text = if json {
                format!("{:#}\n", feeds::to_json(&response))
            } else {
                feeds::to_table(&response, args.explain)
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

fn up(topology: &str, dir: &std::path::Path, ready_timeout: Duration) -> ExitCode {
    let result = runtime(1).and_then(|rt| {
        rt.block_on(async {
            let files = feeds::resolve(topology, dir)?;
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
