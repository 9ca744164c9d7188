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
//!   fleet::observe through backend (kube | directory), reading relay's catalogue ──▶ observed
//!                                                 │
//!   material (read → checked → parsed once) ──▶ plan (desired per CA mode vs observed → Plan + writes)
//!                                                 │
//!                                 apply (carry out the writes: order, concurrency, no decisions)
//!                                 check (verify what the clusters hold, with a real handshake)
//!                                                 │
//!   status (each cluster's state, a run's outcome) · events (notes for transitions only)
//!   metrics (a Prometheus registry built from an observation and counters)
//! ```
//!
//! [`config`], [`model`], [`observed`], [`relay`], [`pki`] (outside
//! [`pki::os`]), [`plan`], [`check`], [`status`], [`events`], [`metrics`],
//! [`shard`] and [`material`] (outside its loader) are pure: no I/O, and the clock and randomness are parameters;
//! `tests/purity.rs` fails when one of them reaches for the file system, the
//! environment, the clock, OS randomness or the shell. The shell —
//! [`cli`], [`source`], [`fleet`], [`backend`], [`files`],
//! [`material::load`] and [`apply`] — does the I/O.
//!
//! # Where things go
//!
//! - A new manifest field: [`config::raw`] (the file shape, and the JSON
//!   schema), then [`config::validate`](mod@config::validate) (rules, one
//!   file per concern; a new diagnostic is a [`config::diag::Code`]) and
//!   [`model`] (meaning).
//! - A new relay Secret: a [`relay::RelaySecret`] and its rows in
//!   [`relay::held`] (which cluster holds it in each mode, its data keys, who
//!   writes it); then where the planner decides it ([`plan`]) and its lines
//!   in [`check`] (a [`check::CheckId`]).
//! - A new CA mode: [`model::CaMode`], its rows in [`relay::held`], its
//!   desired state as a file of `plan::desired`, and its checks in [`check`].
//! - A new certificate rule: [`pki`]; a rule about leaves goes into
//!   [`pki::assess`](mod@pki::assess), which the planner, `check` and validation all use.
//! - A new place clusters live: a [`backend::Backend`] implementation, its
//!   [`model::Connection`], and its arm in [`backend::backend_for`].
//! - A new output of the plan: [`plan::render`]; of `check`:
//!   [`check`]'s `render` and [`check::html`].
//! - A new metric: [`metrics`] (built from data); what the reconcile loop
//!   serves it from is `cli::serve`.
//! - A new kind of Event: [`events::Reason`] and where [`events::of_run`]
//!   finds it.
//! - Who writes which cluster when the fleet is split across processes:
//!   [`shard`] (placement, what a shard plans and waits for, coverage);
//!   the writer fence is [`backend::Backend::fence_writer`], the shell's
//!   part `cli::shard`.
//!
//! # Glossary
//!
//! - *authority*: the host name agents dial; the server cert must cover it.
//! - *instance*: the `RelayTrust` name; goes into ownership labels and the
//!   name of the inventory Secret on mgmt, `relayctl-<instance>-inventory`,
//!   which lists the workload clusters written to, so removed ones can be
//!   pruned.
//! - *orphan*: a cluster in the inventory whose manifest was removed.
//! - *conflict*: an existing Secret relayctl does not own; never overwritten
//!   unless adopted.
//! - *catalogue*: the relay Secrets and who holds them ([`relay`]).
//! - *shard*: one of `N` relayctl processes that split the workload
//!   clusters between them; shard 0, the *coordinator*, alone writes mgmt.
//! - *writer fence*: the Lease `relayctl-<instance>.writer` (a lock file on
//!   the directory backend) a sharded run holds in a workload cluster while
//!   it writes there.

pub mod apply;
pub mod backend;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod files;
pub mod fleet;
pub mod material;
pub mod metrics;
pub mod model;
pub mod observed;
pub mod pki;
pub mod plan;
pub mod relay;
pub mod secret;
pub mod shard;
pub mod source;
pub mod status;
pub mod text;
