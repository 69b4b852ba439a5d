//! The `feeds` application: one binary that serves any set of the five
//! stages (the monolith, one stage per process, or anything between), queries
//! a feed, and starts a whole topology as OS processes.
//!
//! # Layout
//! - `bench`: `feeds bench`: every topology as OS processes under load, side by side.
//! - `config`: [`Config`] (one section per stage plus `process`, `remote`,
//!   `world`), figment layering and validation into a [`Plan`].
//! - `wiring`: the only code that names concrete stage crates; builds the
//!   [`proxy_api::Registry`] for a plan.
//! - `serve`: `feeds serve`: bind, build, log the topology, serve with health.
//! - `telemetry`: logs (text or JSON), OTLP span export, the metrics endpoint.
//! - `query`: `feeds query`: one `GetFeed` call, printed as a table or JSON.
//! - `echo`: `feeds echo`: the bare tonic chain `feeds bench` uses as a floor.
//! - `eval`: `feeds eval`: quality against the world's hidden ground truth.
//! - `topology`: `feeds up`: start, wait for and stop a topology's processes.

pub mod bench;
mod config;
mod echo;
mod eval;
mod query;
mod serve;
pub mod telemetry;
mod topology;
mod wiring;

pub use config::{
    Config, ENV_PREFIX, LoadError, LogFormat, Plan, ProcessConfig, TelemetryConfig, figment, load,
};
pub use echo::run_echo;
pub use eval::{EvalError, EvalReport, Quality, eval};
pub use query::{QueryArgs, QueryError, get_feed, to_json, to_table};
pub use serve::{LIVENESS, Listeners, ServeError, bind, describe, run};
pub use topology::{
    Launch, Member, NAMED, Running, TopologyError, is_serving, launch, resolve, start,
};
pub use wiring::{WiringError, build, build_with, index_dir, world};
