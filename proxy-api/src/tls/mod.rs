//! Mutual TLS between processes (rustls, through tonic's TLS support):
//! `[process.tls]` names a certificate, its key and the CA; the server then
//! accepts only TLS connections from clients whose certificate the CA
//! signed, and every remote client presents the certificate and checks the
//! server's. The files are re-read when they change, so a rotated
//! certificate is used without a restart.
//!
//! tonic's own `ServerTlsConfig`/`ClientTlsConfig` take fixed bytes, so
//! rotation would need a restart; here rustls is configured directly with a
//! certificate resolver and verifiers that read the current material, and
//! handed to tonic as its incoming stream (server) and its connector (client).
//!
//! # Layout
//! - `material`: [`TlsConfig`] and [`Material`], the files loaded, checked and watched.
//! - `server`: [`ServerTls`], the acceptor and the listener loop.
//! - `client`: [`ClientTls`] and its [`Connector`].

mod client;
mod material;
mod server;

pub use client::{ClientTls, Connector};
pub use material::{Material, TlsConfig};
pub use server::ServerTls;

pub(crate) use material::provider;
