//! The `feeds` application: one binary that serves any set of the five
//! stages (the monolith, one stage per process, or anything between), queries
//! a feed, and starts a whole topology as OS processes.
//!
//! # Layout
//! Serving (always built):
//! - `stages`: the macro that turns the list of linked stage crates (in
//!   `config.rs`) into the config's stage sections and the generic build of
//!   each hosted stage.
//! - `config`: [`Config`] (`process`, `remote`, `telemetry`, `world`, and one
//!   section per linked stage), figment layering and validation into a [`Plan`].
//! - `wiring`: builds the [`proxy_api::Registry`] for a plan through the
//!   stage factories; names no stage crate.
//! - `serve`: `feeds serve`: bind, build, log the topology, then the
//!   runtime's server ([`proxy_api::server`]) with the metrics endpoint.
//! - `telemetry`: logs (text or JSON), OTLP span export, the metrics endpoint.
//! - `query`: `feeds query`: one `GetFeed` call, printed as a table or JSON.
//! - `topology`: `feeds up`: start, wait for and stop a topology's processes.
//! - `diff_report`: `feeds diff-report`: a process's shadow comparisons and
//!   their verdicts, from its metrics endpoint.
//! - `replay`: `feeds replay`: recorded calls sent again and compared.
//!
//! The lab (feature `lab`, on by default; these name stage crates directly
//! for their offline work):
//! - `bench`: `feeds bench`: every topology as OS processes under load, side by side.
//! - `chaos`: `feeds chaos`: two replicas of every stage under load, one
//!   fault at a time (kill, SIGTERM restart, SIGSTOP, added latency), and
//!   what the clients saw.
//! - `echo`: `feeds echo`: the bare tonic chain `feeds bench` uses as a floor.
//! - `eval`: `feeds eval`: quality against the world's hidden ground truth.

// Declares the macro `config` uses, so it comes first.
#[macro_use]
mod stages;
#[cfg(feature = "lab")]
pub mod bench;
#[cfg(feature = "lab")]
pub mod chaos;
mod config;
mod diff_report;
#[cfg(feature = "lab")]
mod echo;
#[cfg(feature = "lab")]
mod eval;
mod query;
mod replay;
mod serve;
pub mod telemetry;
mod topology;
mod wiring;

pub use config::LINKED;
pub use config::{
    ConcurrencyLimit, Config, ENV_PREFIX, LoadError, LogFormat, Plan, ProcessConfig, RoutePlan,
    StageLimitConfig, TelemetryConfig, figment, load,
};
pub use diff_report::{DiffReportError, fetch as fetch_diff_report, table as diff_table};
#[cfg(feature = "lab")]
pub use echo::run_echo;
#[cfg(feature = "lab")]
pub use eval::{EvalError, EvalReport, PageQuality, Quality, TenantReport, eval, eval_table};
pub use query::{QueryArgs, QueryError, get_feed, get_feed_with_path, to_json, to_table};
pub use replay::{ReplayArgs, ReplayError, ReplayReport, replay};
pub use serve::{
    LIVENESS, Listeners, ServeError, bind, describe, run, run_reloading, server_options,
};
pub use topology::{
    Launch, Member, NAMED, Relocated, Running, TopologyError, is_serving, launch, relocate,
    resolve, start,
};
pub use wiring::{WiringError, build, build_with, world};
