//! Webhooks: events POSTed to HTTP endpoints, signed the Standard Webhooks way, retried,
//! bounded, and kept out of the private network.
//!
//! - [`config`]: a `[[webhook]]` table and its checks;
//! - [`payload`]: the JSON of each event;
//! - [`signature`]: `webhook-id`, `webhook-timestamp`, `webhook-signature`;
//! - [`queue`]: one endpoint's bounded queue, its batches and the coalescing of occupancy flaps
//!   (sans-IO);
//! - [`retry`]: what a response means, and how long to wait before the next attempt (sans-IO);
//! - [`firewall`]: which destinations are refused;
//! - [`delivery`]: the task that drives one endpoint's queue over HTTP;
//! - [`metrics`]: what `/metrics` shows per endpoint.

pub mod config;
pub mod delivery;
pub mod firewall;
pub mod metrics;
pub mod payload;
pub mod queue;
pub mod retry;
pub mod signature;

pub use config::{Endpoint, WebhookConfig};
