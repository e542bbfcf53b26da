//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's
//! semantics: every write is compare-and-swap on `resourceVersion`; a
//! candidate takes over only when the lease record has not changed for a
//! whole lease duration *by its own clock* (the holder's `renewTime` is never
//! compared with the local clock, so skew between nodes cannot cause two
//! leaders); a leader that cannot renew within the renew deadline steps down
//! at once. Traffic never depends on leadership: only status writes do.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Timing of the election, as client-go names it.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often candidates and the leader act.
    pub retry_period: Duration,
}

/// Runs the election forever, publishing leadership on `tx`.
pub async fn run(client: Client, config: ElectionConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    // The last lease record seen and when (local clock) it last changed.
    let mut observed: Option<(String, Instant)> = None;
    let mut last_renew = Instant::now();
    loop {
        let leading = *tx.borrow();
        match try_acquire_or_renew(&api, &config, &mut observed).await {
            Ok(true) => {
                last_renew = Instant::now();
                if !leading {
                    tracing::info!(identity = %config.identity, lease = %config.name, "Became the leader.");
                }
                set(&tx, true);
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(identity = %config.identity, "Lost the lease to another replica; stopping status writes.");
                }
                set(&tx, false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Lease request failed.");
                if leading && last_renew.elapsed() > config.renew_deadline {
                    tracing::warn!(identity = %config.identity, "Could not renew within the deadline; stepping down.");
                    set(&tx, false);
                }
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// Publishes leadership, notifying receivers only when it changes.
fn set(tx: &watch::Sender<bool>, leading: bool) {
    tx.send_if_modified(|v| std::mem::replace(v, leading) != leading);
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One round. `Ok(true)`: we hold the lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let duration_s = i32::try_from(config.lease_duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let Some(current) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        };
    };
    let rv = current
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    if observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
        *observed = Some((rv.clone(), Instant::now()));
    }
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == config.identity;
    let held_for = spec
        .lease_duration_seconds
        .map_or(config.lease_duration, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
    let expired = holder.is_empty()
        || observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() > held_for);
    if !ours && !expired {
        return Ok(false);
    }
    let mut next = current.clone();
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_s);
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    // Compare-and-swap: the rv we read is in `next`.
    match api
        .replace(&config.name, &PostParams::default(), &next)
        .await
    {
        Ok(written) => {
            *observed = written
                .metadata
                .resource_version
                .map(|rv| (rv, Instant::now()));
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}
