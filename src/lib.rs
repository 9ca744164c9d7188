//! relayctl: a declarative reconciler for the relay trust of a Gloo-style mesh.
//!
//! The relay is the mTLS channel between one management server and one agent
//! per workload cluster. Its trust is a handful of Kubernetes Secrets (root CA,
//! signing CA, server certificate, identity token, per-agent client certificates)
//! that must agree across every cluster. relayctl reads the desired state from
//! YAML manifests, observes every cluster, computes one plan for the fleet and
//! converges it.
//!
//! # Data flow
//!
//! ```text
//! source (path | git) ──bytes──▶ config (raw → validated model + diagnostics)
//!        │                                   │
//!        │                      backend::observe (kube | directory)
//!        ▼                                   ▼
//!   provenance            desired (model + observed CA facts → intents)
//!                                            │
//!                                 plan (intents vs observed → Plan)
//!                                            │
//!                         apply (carry out the Plan, no decisions)
//! ```
//!
//! Everything from [`config`] to [`plan`] is pure: no I/O, no clock, no
//! randomness except what is passed in. The shell ([`cli`], [`backend`],
//! [`source`], [`apply`]) does the I/O.
//!
//! # Where things go
//!
//! - A new manifest field: [`config::raw`] (the file shape, and the JSON schema),
//!   then [`config::validate`] (rules) and [`model`] (meaning).
//! - A new CA mode or secret kind: [`model::CaMode`], then the desired-state
//!   builder, which lists for each mode what each cluster should hold.
//! - A new certificate rule: [`pki`].
//!
//! # Glossary
//!
//! - *authority*: the host name agents dial; the server cert must cover it.
//! - *instance*: the `RelayTrust` name; goes into ownership labels.
//! - *intent*: what one Secret should be, without the secret bytes chosen yet.

pub mod apply;
pub mod backend;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod fleet;
pub mod material;
pub mod model;
pub mod observed;
pub mod pki;
pub mod plan;
pub mod secret;
pub mod source;
