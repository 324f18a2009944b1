//! Network actions.

use super::{Ctx, Report, Transient, workloads};

/// Namespace of the network daemon sets Steward may restart.
const NETWORK_NAMESPACE: &str = "kube-system";

/// Restarts an allowed network daemon set in kube-system.
///
/// Only the daemon sets named in the settings may be restarted, because a
/// restart of the CNI or kube-proxy briefly affects every pod's network on
/// each node in turn.
pub(super) async fn restart_network_component(ctx: &Ctx<'_>) -> Result<Report, Transient> {
    let target = ctx.target();
    let allowed = &ctx.settings.network_daemonsets;
    if target.namespace != NETWORK_NAMESPACE || !allowed.contains(&target.name) {
        let names = if allowed.is_empty() {
            "none".to_owned()
        } else {
            allowed.join(", ")
        };
        return Ok(Report::failed(format!(
            "{target} is not an allowed network component: restart_network_component restarts only daemon sets in {NETWORK_NAMESPACE} named in --network-daemonsets (now: {names}); add the name there to allow it"
        )));
    }

    workloads::restart(ctx).await
}
