//! Security actions: quarantine and diagnostics.

use super::{Ctx, Report, Transient};

/// Labels the pod and isolates it with a deny-all network policy.
pub(super) async fn quarantine_pod(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}

/// Collects the pod's status, recent events and log tails.
pub(super) async fn collect_diagnostics(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}
