//! Monitoring actions: a bounded debug mode.

use super::{Ctx, Report, Transient};

/// Sets the debug environment variable for a bounded time.
pub(super) async fn enable_debug_mode(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}
