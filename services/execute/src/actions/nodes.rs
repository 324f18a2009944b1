//! Node actions: cordon, uncordon and drain.

use super::{Ctx, Report, Transient};

/// Marks the node schedulable or unschedulable.
pub(super) async fn set_schedulable(ctx: &Ctx<'_>, schedulable: bool) -> Result<Report, Transient> {
    let _ = (ctx, schedulable);
    Ok(Report::failed("not implemented yet"))
}

/// Cordons the node and evicts its pods through the Eviction API.
pub(super) async fn drain(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}
