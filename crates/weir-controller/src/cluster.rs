//! The Kubernetes API provider behind `weir run`: reflectors for every kind
//! the compiler reads, a debounced recompile, and publication on the same
//! channel the manifest provider uses.
//!
//! ```text
//!  watcher(Ingress) ─┐
//!  watcher(Class)   ─┼─▶ reflector stores ──change──▶ debounce (20-100 ms quiet, 500 ms max)
//!  watcher(Service) ─┤                                  │ all stores listed?
//!  watcher(Slice)   ─┘                                  ▼
//!                                       Inputs (Arc copies) ─▶ compile (blocking pool) ─▶ publish if changed
//! ```
//!
//! Nothing is compiled until every store has its initial list, so a restart
//! never serves a half-listed cluster (routes without endpoints would answer
//! 503). Watch failures are retried with kube-runtime's default backoff; the
//! data plane keeps the last snapshot meanwhile, because publishing only
//! ever replaces a snapshot with a newer complete one.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio::time::Instant;
use weir_compiler::{CompileOptions, Inputs, ObjectKey, compile};
use weir_crd::GatewayPolicy;

use crate::ControllerMetrics;
use crate::publish::Publisher;
use crate::secrets::SecretWatches;

/// Quiet time after a change before compiling: as long as the last compile
/// took, between these bounds. A small cluster (cheap compiles) serves a
/// `kubectl apply` in tens of milliseconds; a large one never spends more
/// than about half its time compiling under churn.
const HOLD_OFF_MIN: Duration = Duration::from_millis(20);
const HOLD_OFF_MAX: Duration = Duration::from_millis(100);
/// Longest a change waits while changes keep coming.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Reflector stores of everything the compiler reads. Namespaced kinds
/// have one store per watched namespace (one in all, with no
/// `--watch-namespace`).
#[derive(Clone)]
struct Stores {
    ingresses: Vec<Store<Ingress>>,
    classes: Store<IngressClass>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    policies: Vec<Store<GatewayPolicy>>,
    /// The EndpointSlices of weir's own Service (`--publish-service`),
    /// watched apart because its namespace may not be a watched one: its
    /// ready endpoints are the replica count of `localShare` limits.
    peers: Option<Store<EndpointSlice>>,
}

fn key<K: Resource>(o: &K) -> ObjectKey {
    let meta = o.meta();
    ObjectKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn keyed<'a, K>(
    stores: impl IntoIterator<Item = &'a Store<K>>,
) -> std::collections::BTreeMap<ObjectKey, Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores
        .into_iter()
        .flat_map(Store::state)
        .map(|o| (key(o.as_ref()), o))
        .collect()
}

impl Stores {
    fn inputs(&self, secrets: &SecretWatches) -> Inputs {
        Inputs {
            ingresses: keyed(&self.ingresses),
            ingress_classes: self
                .classes
                .state()
                .into_iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                .collect(),
            services: keyed(&self.services),
            endpoint_slices: keyed(self.slices.iter().chain(&self.peers)),
            policies: keyed(&self.policies),
            secrets: secrets.secrets(),
        }
    }

    fn policy_objects(&self) -> Vec<Arc<GatewayPolicy>> {
        self.policies.iter().flat_map(Store::state).collect()
    }

    async fn wait_until_ready(&self, policies_served: bool) -> bool {
        let mut ok = self.classes.wait_until_ready().await.is_ok();
        for s in &self.ingresses {
            ok &= s.wait_until_ready().await.is_ok();
        }
        for s in &self.services {
            ok &= s.wait_until_ready().await.is_ok();
        }
        for s in &self.slices {
            ok &= s.wait_until_ready().await.is_ok();
        }
        // Routes must never be served before the policies that protect them
        // are known; without the CRD there are none to wait for.
        if policies_served {
            for s in &self.policies {
                ok &= s.wait_until_ready().await.is_ok();
            }
        }
        ok
    }

    fn count_objects(&self, metrics: &ControllerMetrics) {
        let n = |sizes: Vec<usize>| i64::try_from(sizes.iter().sum::<usize>()).unwrap_or(i64::MAX);
        let set = |kind: &str, v: i64| metrics.objects.with_label_values(&[kind]).set(v);
        set(
            "Ingress",
            n(self.ingresses.iter().map(|s| s.state().len()).collect()),
        );
        set("IngressClass", n(vec![self.classes.state().len()]));
        set(
            "Service",
            n(self.services.iter().map(|s| s.state().len()).collect()),
        );
        set(
            "EndpointSlice",
            n(self.slices.iter().map(|s| s.state().len()).collect()),
        );
        set(
            "GatewayPolicy",
            n(self.policies.iter().map(|s| s.state().len()).collect()),
        );
    }
}

/// What a reflector can watch: a statically typed Kubernetes resource.
pub(crate) trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Runs a reflector for `K` until the process ends, poking `changed` after
/// every event.
fn reflect<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    metrics: &ControllerMetrics,
) -> Store<K> {
    reflect_with_task(api, config, None, changed, metrics).0
}

/// Whether a watch failed because the resource is not served (a CRD that is
/// not installed): expected, retried quietly.
fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// Like [`reflect`], returning the task so the watch can be stopped;
/// `transform` rewrites each object before the store keeps it.
pub(crate) fn reflect_with_task<K: Watched>(
    api: Api<K>,
    config: watcher::Config,
    transform: Option<fn(&mut K)>,
    changed: Arc<Notify>,
    metrics: &ControllerMetrics,
) -> (Store<K>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let watch = futures::TryStreamExt::map_ok(watcher(api, config), move |event| match transform {
        Some(f) => event.modify(f),
        None => event,
    });
    let stream = reflector::reflector(writer, watch).default_backoff();
    let events = metrics.watch_events.with_label_values(&[&kind]);
    let errors = metrics.watch_errors.with_label_values(&[&kind]);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut said_not_found = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    said_not_found = false;
                    events.inc();
                    changed.notify_one();
                }
                Err(e) if is_not_found(&e) => {
                    errors.inc();
                    if !said_not_found {
                        said_not_found = true;
                        tracing::info!(kind = %kind, "The API server does not serve this kind (CRD not installed?); retrying with backoff until it does.");
                    }
                }
                Err(e) => {
                    errors.inc();
                    tracing::warn!(kind = %kind, error = %e, "Watch failed; retrying with backoff.");
                }
            }
        }
    });
    (reader, task)
}

/// One store per watched namespace (or one over all namespaces).
fn reflect_namespaced<K>(
    client: &Client,
    namespaces: &[String],
    changed: &Arc<Notify>,
    metrics: &ControllerMetrics,
) -> Vec<Store<K>>
where
    K: Watched + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    if namespaces.is_empty() {
        return vec![reflect(
            Api::<K>::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
            metrics,
        )];
    }
    namespaces
        .iter()
        .map(|ns| {
            reflect(
                Api::<K>::namespaced(client.clone(), ns),
                watcher::Config::default(),
                changed.clone(),
                metrics,
            )
        })
        .collect()
}

/// What the leader writes back to the cluster.
pub struct StatusConfig {
    /// Whether this replica leads (from [`crate::leader::run`], or always
    /// true without leader election).
    pub leader: tokio::sync::watch::Receiver<bool>,
    /// `--publish-address` values for Ingress `status.loadBalancer`.
    pub addresses: Vec<String>,
    /// `--publish-service namespace/name`: use that Service's load-balancer
    /// addresses instead (what a cloud load balancer in front of weir got).
    pub publish_service: Option<(String, String)>,
}

/// Watches the cluster through `client` and publishes compiled snapshots.
pub struct ClusterProvider {
    client: Client,
    options: CompileOptions,
    publisher: Publisher,
    metrics: ControllerMetrics,
    status: Option<StatusConfig>,
    accepted: std::collections::BTreeSet<weir_compiler::ObjectRef>,
    /// Findings of the last compile, and those already reported as Events.
    diagnostics: Vec<weir_compiler::Diagnostic>,
    reported: std::collections::BTreeSet<weir_compiler::Diagnostic>,
    recorder: kube::runtime::events::Recorder,
    namespaces: Vec<String>,
    publish_service: Option<Store<Service>>,
    /// When the first event of the batch being compiled arrived.
    first_change: Option<Instant>,
    /// The last version of each Ingress that compiled without errors.
    last_good: LastGood,
    /// Secrets the policies use.
    secrets: SecretWatches,
    /// Poked by every watch event.
    changed: Arc<Notify>,
    /// What the last compile made of each policy.
    policy_outcomes:
        std::collections::BTreeMap<weir_compiler::ObjectRef, weir_compiler::PolicyOutcome>,
}

/// The last version of each object that compiled without errors.
#[derive(Default)]
struct LastGood {
    ingresses: ByKey<Ingress>,
    policies: ByKey<GatewayPolicy>,
}

/// Objects by key, as the compiler's inputs hold them.
type ByKey<K> = std::collections::BTreeMap<ObjectKey, Arc<K>>;

/// Splits `current` into the objects to replace by their last good version
/// (`bad` and with one on record) and the next last-good map (`good` ones).
fn split_last_good<K: Resource>(
    current: &ByKey<K>,
    last_good: &ByKey<K>,
    bad: impl Fn(&ObjectKey) -> bool,
    good: impl Fn(&ObjectKey) -> bool,
) -> (Vec<(ObjectKey, Arc<K>)>, ByKey<K>) {
    let substitutes = current
        .iter()
        .filter(|(k, _)| bad(k))
        .filter_map(|(k, now)| {
            let good = last_good.get(k)?;
            // The same version cannot help.
            (good.meta().resource_version != now.meta().resource_version)
                .then(|| (k.clone(), good.clone()))
        })
        .collect();
    let next = current
        .iter()
        .filter(|(k, _)| good(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (substitutes, next)
}

/// Compiles; where an Ingress or a GatewayPolicy that used to be valid is
/// now rejected, compiles again with its last good version in its place, so
/// a bad edit never takes working routes down (nor, for a policy, turns its
/// routes to 503). The rejection is still reported, together with a
/// `ServingLastGood` warning. Returns the last-good maps for the next
/// compile (deleted objects drop out of them).
fn compile_keeping_last_good(
    mut inputs: Inputs,
    options: &CompileOptions,
    last_good: LastGood,
) -> (weir_compiler::Compiled, LastGood) {
    use weir_compiler::{Diagnostic, ObjectRef, Severity};
    let ingress = |k: &ObjectKey| ObjectRef::new("Ingress", &k.namespace, &k.name);
    let policy = |k: &ObjectKey| ObjectRef::new("GatewayPolicy", &k.namespace, &k.name);
    let first = compile(&inputs, options);
    // Objects with an error, indexed once (thousands of Ingresses must not
    // each scan every diagnostic).
    let with_errors: std::collections::HashSet<&ObjectRef> = first
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| &d.object)
        .collect();
    let (ingress_subs, mut next_ingresses) = split_last_good(
        &inputs.ingresses,
        &last_good.ingresses,
        |k| {
            let o = ingress(k);
            !first.accepted.contains(&o) && with_errors.contains(&o)
        },
        |k| {
            let o = ingress(k);
            first.accepted.contains(&o) && !with_errors.contains(&o)
        },
    );
    let (policy_subs, mut next_policies) = split_last_good(
        &inputs.policies,
        &last_good.policies,
        |k| with_errors.contains(&policy(k)),
        |k| !with_errors.contains(&policy(k)),
    );
    drop(with_errors);
    if ingress_subs.is_empty() && policy_subs.is_empty() {
        let next = LastGood {
            ingresses: next_ingresses,
            policies: next_policies,
        };
        return (first, next);
    }
    let replaced: Vec<(ObjectRef, Option<String>)> = ingress_subs
        .iter()
        .map(|(k, g)| (ingress(k), g.metadata.resource_version.clone()))
        .chain(
            policy_subs
                .iter()
                .map(|(k, g)| (policy(k), g.metadata.resource_version.clone())),
        )
        .collect();
    let mut reported: Vec<Diagnostic> = first
        .diagnostics
        .iter()
        .filter(|d| replaced.iter().any(|(o, _)| &d.object == o))
        .cloned()
        .collect();
    for (object, version) in &replaced {
        reported.push(Diagnostic {
            object: object.clone(),
            severity: Severity::Warning,
            field: None,
            reason: "ServingLastGood",
            message: format!(
                "the current version is rejected; its last valid version (resourceVersion {}) is still served",
                version.as_deref().unwrap_or("?")
            ),
        });
    }
    // Status must describe the current generation, not the substitute's.
    let generations: Vec<(ObjectRef, Option<i64>)> = policy_subs
        .iter()
        .map(|(k, _)| {
            (
                policy(k),
                inputs.policies.get(k).and_then(|p| p.metadata.generation),
            )
        })
        .collect();
    for (k, good) in ingress_subs {
        inputs.ingresses.insert(k.clone(), good.clone());
        next_ingresses.insert(k, good);
    }
    for (k, good) in policy_subs {
        inputs.policies.insert(k.clone(), good.clone());
        next_policies.insert(k, good);
    }
    let mut second = compile(&inputs, options);
    second
        .diagnostics
        .retain(|d| !replaced.iter().any(|(o, _)| &d.object == o));
    second.diagnostics.extend(reported);
    second.diagnostics.sort();
    for (object, generation) in generations {
        if let Some(outcome) = second.policies.get_mut(&object) {
            outcome.generation = generation;
        }
    }
    let next = LastGood {
        ingresses: next_ingresses,
        policies: next_policies,
    };
    (second, next)
}

impl ClusterProvider {
    /// A provider over `client`, watching `namespaces` (all when empty).
    pub fn new(
        client: Client,
        options: CompileOptions,
        publisher: Publisher,
        metrics: ControllerMetrics,
        namespaces: Vec<String>,
    ) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: "weir.dev/ingress-controller".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        ClusterProvider {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client,
            options,
            publisher,
            metrics,
            status: None,
            accepted: Default::default(),
            diagnostics: Vec::new(),
            reported: Default::default(),
            namespaces,
            publish_service: None,
            first_change: None,
            last_good: LastGood::default(),
            secrets: SecretWatches::default(),
            changed: Arc::new(Notify::new()),
            policy_outcomes: Default::default(),
        }
    }

    /// Enables status writes (by the leader only).
    pub fn with_status(mut self, status: StatusConfig) -> Self {
        self.status = Some(status);
        self
    }

    /// Writes Ingress status if this replica leads.
    async fn write_status(&mut self, stores: &Stores) {
        let Some(status) = &self.status else { return };
        if !*status.leader.borrow() {
            return;
        }
        let desired = match &self.publish_service {
            Some(store) => crate::status::service_load_balancer(store),
            None => crate::status::load_balancer(&status.addresses),
        };
        let n =
            crate::status::sync(&self.client, &stores.ingresses, &self.accepted, &desired).await;
        if n > 0 {
            tracing::info!(ingresses = n, "Wrote Ingress status.");
        }
        let n = crate::status::sync_policies(
            &self.client,
            &stores.policies,
            &self.policy_outcomes,
            &self.diagnostics,
        )
        .await;
        if n > 0 {
            tracing::info!(policies = n, "Wrote GatewayPolicy status.");
        }
        crate::status::report(&self.recorder, &self.reported, &self.diagnostics).await;
        self.reported = self.diagnostics.iter().cloned().collect();
    }

    /// Runs forever: waits for the initial lists, then recompiles on change.
    pub async fn run(mut self) {
        let changed = self.changed.clone();
        let c = &self.client;
        let m = &self.metrics;
        let ns = &self.namespaces;
        let mut stores = Stores {
            ingresses: reflect_namespaced(c, ns, &changed, m),
            classes: reflect(
                Api::<IngressClass>::all(c.clone()),
                watcher::Config::default(),
                changed.clone(),
                m,
            ),
            services: reflect_namespaced(c, ns, &changed, m),
            slices: reflect_namespaced(c, ns, &changed, m),
            policies: reflect_namespaced(c, ns, &changed, m),
            peers: None,
        };
        let policies_served = policies_served(c).await;
        if let Some((namespace, name)) =
            self.status.as_ref().and_then(|s| s.publish_service.clone())
        {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let store = reflect(
                Api::<Service>::namespaced(c.clone(), &namespace),
                config,
                changed.clone(),
                m,
            );
            if store.wait_until_ready().await.is_err() {
                tracing::error!("The --publish-service reflector stopped; not publishing.");
                return;
            }
            self.publish_service = Some(store);
            let config =
                watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}"));
            let peers = reflect(
                Api::<EndpointSlice>::namespaced(c.clone(), &namespace),
                config,
                changed.clone(),
                m,
            );
            if peers.wait_until_ready().await.is_err() {
                tracing::error!(
                    "The --publish-service EndpointSlice reflector stopped; not publishing."
                );
                return;
            }
            stores.peers = Some(peers);
        }
        if !stores.wait_until_ready(policies_served).await {
            tracing::error!("A reflector stopped before its initial list; not publishing.");
            return;
        }
        tracing::info!("Initial lists received; compiling.");
        let mut leader = self.status.as_ref().map(|s| s.leader.clone());
        loop {
            let took = self.compile_and_publish(&stores).await;
            self.write_status(&stores).await;
            let hold_off = took.clamp(HOLD_OFF_MIN, HOLD_OFF_MAX);
            stores.count_objects(&self.metrics);

            // Wait for a change; becoming leader also calls for a status sync.
            loop {
                let became_leader = async {
                    match leader.as_mut() {
                        // Resolves on a transition to leader only.
                        Some(rx) => loop {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                            if *rx.borrow_and_update() {
                                break;
                            }
                        },
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = changed.notified() => {
                        self.first_change = Some(Instant::now());
                        break;
                    }
                    () = became_leader => self.write_status(&stores).await,
                }
            }
            // Debounce: wait for `hold_off` of quiet, at most MAX_DELAY.
            let deadline = Instant::now() + MAX_DELAY;
            loop {
                let quiet = tokio::time::timeout(hold_off, changed.notified());
                match tokio::time::timeout_at(deadline, quiet).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
    }

    /// Compiles the stores and publishes; returns how long the compile took.
    async fn compile_and_publish(&mut self, stores: &Stores) -> Duration {
        let policies = stores.policy_objects();
        let ingresses: Vec<_> = stores.ingresses.iter().flat_map(Store::state).collect();
        let tls = crate::secrets::tls_secrets(
            ingresses.iter().map(|i| i.as_ref()),
            self.options.default_certificate.as_ref(),
        );
        self.secrets
            .reconcile(
                &self.client,
                policies.iter().map(|p| p.as_ref()),
                tls.into_iter(),
                &self.changed,
                &self.metrics,
            )
            .await;
        let start = std::time::Instant::now();
        let inputs = stores.inputs(&self.secrets);
        self.metrics
            .objects
            .with_label_values(&["Secret"])
            .set(i64::try_from(inputs.secrets.len()).unwrap_or(i64::MAX));
        let options = self.options.clone();
        let last_good = std::mem::take(&mut self.last_good);
        let compiled = match tokio::task::spawn_blocking(move || {
            compile_keeping_last_good(inputs, &options, last_good)
        })
        .await
        {
            Ok((c, good)) => {
                self.last_good = good;
                c
            }
            Err(e) => {
                tracing::error!(error = %e, "Compile task failed; keeping the last snapshot.");
                return start.elapsed();
            }
        };
        self.metrics
            .compile_seconds
            .observe(start.elapsed().as_secs_f64());
        let routes = compiled.snapshot.route_count();
        self.accepted = compiled.accepted.clone();
        self.policy_outcomes = compiled.policies.clone();
        self.diagnostics = compiled.diagnostics.clone();
        if self.publisher.publish(compiled) {
            if let Some(first) = self.first_change.take() {
                self.metrics
                    .change_to_publish
                    .observe(first.elapsed().as_secs_f64());
            }
            tracing::info!(
                routes,
                ms = start.elapsed().as_millis() as u64,
                "Cluster state compiled and published."
            );
        }
        start.elapsed()
    }
}

/// Whether the API server serves GatewayPolicies. Only a 404 means no:
/// any other failure is treated as yes, so weir waits for the policies
/// rather than serving routes without them.
async fn policies_served(client: &Client) -> bool {
    match client.list_api_group_resources("weir.dev/v1alpha1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "gatewaypolicies"),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::info!(
                "The GatewayPolicy CRD is not installed; routes are served without policies until it is."
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot tell whether the GatewayPolicy CRD is installed; waiting for its list.");
            true
        }
    }
}
