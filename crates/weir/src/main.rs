//! The weir binary: parses flags, wires a configuration provider to the data
//! plane through a `watch` channel, and serves the admin endpoints.

mod admin;
mod cli;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_compiler::CompileOptions;
use weir_controller::cluster::{ClusterProvider, StatusConfig};
use weir_controller::file::FileProvider;
use weir_controller::leader;
use weir_controller::{ControllerMetrics, Publisher};
use weir_proxy::{Listener, Proxy, ProxyMetrics};
use weir_snapshot::Published;

use crate::cli::{ClassArgs, Cli, Command, ListenArgs, LogFormat};

/// mimalloc instead of glibc's malloc: a proxied request allocates and
/// frees dozens of short-lived blocks (header maps, buffers, futures), and
/// glibc's allocator spends part of each request consolidating its free
/// lists. Measured with `bench/cpu-split.sh` (A/B in one run, both orders):
/// about 5 % less CPU per proxied request. Built without transparent huge
/// pages (`no_thp`): with them its arenas cost 10 MB more RSS at idle.
/// linkerd2-proxy replaces the allocator (with jemalloc) for the same reason.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log_level)?;
    // One worker: the current-thread scheduler runs the same event loop
    // without the work-stealing machinery it could not use anyway.
    let mut runtime = match cli.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = runtime.build().context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(
            args.listen,
            args.class,
            Source::Manifests(args.manifests),
        )),
        Command::Run(args) => {
            let cluster = Cluster {
                kubeconfig: args.kubeconfig,
                publish_address: args.publish_address,
                publish_service: args.publish_service,
                watch_namespace: args.watch_namespace,
                election: args.leader_elect.then(|| leader::ElectionConfig {
                    namespace: args
                        .election_namespace
                        .or_else(|| std::env::var("POD_NAMESPACE").ok())
                        .unwrap_or_else(|| "default".into()),
                    name: args.election_id,
                    identity: format!(
                        "{}-{}",
                        std::env::var("HOSTNAME").unwrap_or_else(|_| "weir".into()),
                        std::process::id()
                    ),
                    lease_duration: args.lease_duration.into(),
                    renew_deadline: args.renew_deadline.into(),
                    retry_period: args.retry_period.into(),
                }),
            };
            runtime.block_on(serve(
                args.listen,
                args.class,
                Source::Cluster(Box::new(cluster)),
            ))
        }
    }
}

fn init_tracing(format: LogFormat, level: &str) -> anyhow::Result<()> {
    // rustls warns once per handshake about client quirks (an IP address as
    // SNI, as wrk and some scanners send): anyone on the internet could
    // flood the log. Quiet unless the filter names rustls itself.
    let level = if level.contains("rustls") {
        level.to_owned()
    } else {
        format!("{level},rustls=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Where snapshots come from.
enum Source {
    /// `weir serve --manifests DIR`.
    Manifests(std::path::PathBuf),
    /// `weir run`.
    Cluster(Box<Cluster>),
}

/// Settings of `weir run` beyond the shared ones.
struct Cluster {
    kubeconfig: Option<std::path::PathBuf>,
    publish_address: Vec<String>,
    publish_service: Option<(String, String)>,
    watch_namespace: Vec<String>,
    election: Option<leader::ElectionConfig>,
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding Kubernetes credentials (in-cluster or kubeconfig)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

async fn serve(listen: ListenArgs, class: ClassArgs, source: Source) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let proxy_metrics = ProxyMetrics::register(&registry).context("registering metrics")?;
    let controller_metrics =
        ControllerMetrics::register(&registry).context("registering metrics")?;
    let auth_metrics =
        weir_auth::AuthMetrics::register(&registry).context("registering metrics")?;
    let limit_metrics =
        weir_ratelimit::RateLimitMetrics::register(&registry).context("registering metrics")?;
    let limiter = weir_ratelimit::RateLimiter::new(
        listen.rate_limits.ratelimit_local_capacity,
        listen.rate_limits.redis()?.as_ref(),
        limit_metrics,
    )
    .context("configuring Redis (--redis-url)")?;
    let replicas_flag = listen.rate_limits.ratelimit_replicas;
    limiter.set_replicas(replicas_flag);
    limiter.spawn_sweeper(std::time::Duration::from_secs(10));
    let proxy = Proxy::new(
        listen.proxy_config(),
        proxy_metrics,
        weir_auth::AuthRuntime::new(auth_metrics),
        limiter.clone(),
    )
    .with_access_log(&listen.access_log, listen.access_log_sample)
    .with_context(|| format!("opening the access log {:?}", listen.access_log))?;
    let (proxy, tls_config) = match listen.https_addr {
        Some(_) => {
            let (proxy, config) = proxy.with_tls().context("setting up TLS")?;
            (proxy, Some(config))
        }
        None => (proxy, None),
    };
    let proxy = Arc::new(proxy);

    let http = TcpListener::bind(listen.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", listen.http_addr))?;
    let admin = TcpListener::bind(listen.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", listen.admin_addr))?;
    let https = match listen.https_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --https-addr {addr}"))?,
        ),
        None => None,
    };
    let https_addr = https
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?
        .map(|a| a.to_string());
    tracing::info!(
        http = %http.local_addr()?,
        https = https_addr.as_deref(),
        admin = %admin.local_addr()?,
        "Listening."
    );

    let (tx, mut rx) = watch::channel::<Option<Published>>(None);
    let mut options = CompileOptions {
        class_name: class.ingress_class.clone(),
        controller_name: class.controller_name.clone(),
        watch_ingress_without_class: class.watch_ingress_without_class,
        allow_static_upstreams: false,
        default_backend: class.default_backend.clone(),
        replicas_service: None,
        default_certificate: listen.default_ssl_certificate.clone(),
    };
    let publisher = Publisher::new(tx, controller_metrics.clone());
    let provider_task = match source {
        Source::Manifests(dir) => {
            // Without pods, static endpoints are how a Service gets any.
            options.allow_static_upstreams = true;
            let mut provider = FileProvider::new(dir, options, publisher, controller_metrics);
            provider.load().context("loading --manifests")?;
            tokio::spawn(provider.watch())
        }
        Source::Cluster(cluster) => {
            let client = kube_client(cluster.kubeconfig.as_deref()).await?;
            // weir's own Service lists the live replicas (localShare limits).
            options.replicas_service = cluster.publish_service.clone();
            // Without election this replica writes status alone.
            let (leader_tx, leader_rx) = watch::channel(cluster.election.is_none());
            {
                // weir_leader follows the election.
                let gauge = controller_metrics.leader.clone();
                let mut rx = leader_rx.clone();
                tokio::spawn(async move {
                    loop {
                        gauge.set(i64::from(*rx.borrow_and_update()));
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
            if let Some(election) = cluster.election {
                tokio::spawn(leader::run(client.clone(), election, leader_tx));
            }
            let provider = ClusterProvider::new(
                client,
                options,
                publisher,
                controller_metrics,
                cluster.watch_namespace,
            )
            .with_status(StatusConfig {
                leader: leader_rx,
                addresses: cluster.publish_address,
                publish_service: cluster.publish_service,
            });
            tokio::spawn(provider.run())
        }
    };

    // Installs each published snapshot into the data plane.
    let ready = Arc::new(AtomicBool::new(false));
    let installer = {
        let proxy = proxy.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            loop {
                let published = rx.borrow_and_update().clone();
                if let Some(p) = published {
                    limiter.set_replicas(p.snapshot.replicas.unwrap_or(replicas_flag));
                    proxy.install(&p.snapshot, p.generation);
                    ready.store(true, Ordering::Release);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin,
        registry,
        ready.clone(),
        proxy.clone(),
        stop_rx.clone(),
    ));
    let drain = listen.drain_timeout.into();
    let serve = |socket, proto, tls| {
        let mut stop = stop_rx.clone();
        tokio::spawn(weir_proxy::serve(
            Listener { socket, proto, tls },
            proxy.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
            drain,
        ))
    };
    let proxy_task = serve(http, "http", None);
    let https_task = https.map(|socket| serve(socket, "https", tls_config));

    shutdown_signal().await;
    tracing::info!("Shutdown requested; no longer ready, draining.");
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let mut cut = proxy_task.await.context("proxy task")?;
    if let Some(task) = https_task {
        cut += task.await.context("HTTPS task")?;
    }
    provider_task.abort();
    installer.abort();
    admin_task.abort();
    if cut > 0 {
        tracing::warn!(
            connections = cut,
            "Exited with connections still open at the drain deadline."
        );
    }
    tracing::info!("Stopped.");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop weir with SIGKILL.");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
