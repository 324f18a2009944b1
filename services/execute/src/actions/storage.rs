//! Storage actions that use the API directly; the others run job templates.

use super::{Ctx, Report, Transient};

/// Grows a persistent volume claim when its storage class allows it.
pub(super) async fn expand_pvc(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let _ = ctx;
    Ok(Report::failed("not implemented yet"))
}
