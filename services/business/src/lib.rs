//! Business: the entry stage (**business** -> split -> rerank -> fine-rank ->
//! recall) that a product calls with `GetFeed`. Knows tenants (page-size
//! limits, allowed categories, experiment layers), validates requests, pages
//! with a cursor and fills item metadata into the final page.

mod config;
mod error;
mod pb;
mod stage;

pub use config::{Config, TenantConfig};
pub use error::Error;
pub use stage::{BusinessStage, Factory, Page};
