//! Who may connect and from where, decided once per connection at its HTTP request, off the
//! delivery path: JWTs verified with `jsonwebtoken` ([`token`]), the token's places in a request
//! and the `Origin` check ([`authenticator`]), the origins ([`origin`]), and the per-address
//! connection and handshake limits applied at accept ([`address`]). What a verified token grants
//! is the broker's ([`crate::broker::grants`]): the endpoint checks each subscribe and publish
//! against it, and the broker drops subscriptions a refreshed token no longer grants.
//!
//! Sans-IO like the layers below: key files are read once at start-up, and every check takes
//! the time from its caller.

pub mod address;
pub mod authenticator;
pub mod config;
pub mod origin;
pub mod token;

pub use address::{AddressAdmission, AddressLimits, AddressTicket};
pub use authenticator::{AuthRefusal, Authenticator};
pub use config::{AuthConfig, AuthMode};
pub use token::{AuthFailure, Identity};
