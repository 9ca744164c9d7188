//! Manifests: YAML text to a validated model, with every problem located.
//!
//! [`node`] reads YAML into a located tree, [`raw`] is the file shape (and
//! the JSON schema), [`validate`](mod@validate) applies every rule and yields a
//! [`crate::model::TrustConfig`] or all [`diag::Diagnostic`]s at once. Each
//! rule reports a [`diag::Code`]; the codes are listed and described in one table.

pub mod diag;
pub mod node;
pub mod paths;
pub mod raw;
pub mod validate;

pub use diag::Diagnostic;
pub use validate::{ManifestFile, validate};
