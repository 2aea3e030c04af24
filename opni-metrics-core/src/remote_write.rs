//! Remote-write request checks and the status rules of the forwarding path (DESIGN §5).
//!
//! [`check`] validates a request's headers and the snappy block preamble without decompressing
//! or allocating; [`classify`] turns the upstream's outcome into what the agent answers
//! Prometheus; [`validate_body`] is the optional deep check of a decompressed body against
//! what the remote-write specifications say a receiver must refuse. All are pure functions, cheap enough for every request. [`ForwardRequest`] and
//! [`ForwardResponse`] are the contract between the gateway and its upstream forwarder.

mod check;
mod forward;
mod status;
mod validate;
mod wire;

pub use check::{CheckError, Checked, Limits, RequestHead, Version, check, check_content_length};
pub use forward::{ForwardError, ForwardRequest, ForwardResponse, is_relayed_header, status_class};
pub use status::{Outcome, Reply, StatusOptions, classify};
pub use validate::{ValidateError, validate_body};
pub use wire::{WireError, check_well_formed};

/// The header naming the tenant in Cortex-compatible stores.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Whether `name` is (any case variant of) the tenant header `X-Scope-OrgID`.
pub fn is_tenant_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TENANT_HEADER)
}
