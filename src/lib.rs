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
//! source (path | git) ──files + provenance──▶ config (raw → validated model, or every diagnostic)
//!                                                 │
//!        fleet::observe through backend (kube | directory) ──▶ observed (plain data)
//!                                                 │
//!        material (user's certs, keys, tokens) ──▶ plan (desired vs observed → Plan + writes)
//!                                                 │
//!                                 apply (carry out the writes: order, concurrency, no decisions)
//!                                 check (verify what the clusters hold, with a real handshake)
//! ```
//!
//! [`config`], [`model`], [`observed`], [`pki`], [`plan`] and [`check`] are
//! pure: no I/O, and the clock and randomness are parameters. The shell —
//! [`cli`], [`source`], [`fleet`], [`backend`], [`material`]'s loader and
//! [`apply`] — does the I/O.
//!
//! # Where things go
//!
//! - A new manifest field: [`config::raw`] (the file shape, and the JSON
//!   schema), then [`config::validate`](mod@config::validate) (rules) and [`model`] (meaning).
//! - A new CA mode or Secret kind: [`model::CaMode`], then [`plan`], whose
//!   `plan_management` and `plan_workload` list for each mode what each
//!   cluster holds, and [`check`].
//! - A new certificate rule: [`pki`].
//! - A new place clusters live: a [`backend::Backend`] implementation, its
//!   [`model::Connection`], and its arm in [`backend::backend_for`].
//! - A new output of the plan: [`plan::render`].
//!
//! # Glossary
//!
//! - *authority*: the host name agents dial; the server cert must cover it.
//! - *instance*: the `RelayTrust` name; goes into ownership labels.
//! - *instance*: also the name of the inventory Secret on mgmt that lists the
//!   workload clusters written to, so removed ones can be pruned.
//! - *orphan*: a cluster in the inventory whose manifest was removed.
//! - *conflict*: an existing Secret relayctl does not own; never overwritten
//!   unless adopted.

pub mod apply;
pub mod backend;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod files;
pub mod fleet;
pub mod material;
pub mod model;
pub mod observed;
pub mod pki;
pub mod plan;
pub mod relay;
pub mod secret;
pub mod source;
pub mod text;
