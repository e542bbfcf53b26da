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
use weir_controller::file::FileProvider;
use weir_controller::{ControllerMetrics, Publisher};
use weir_proxy::{Listener, Proxy, ProxyMetrics};
use weir_snapshot::Published;

use crate::cli::{Cli, Command, LogFormat, ServeArgs};

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
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
}

fn init_tracing(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let proxy_metrics = ProxyMetrics::register(&registry).context("registering metrics")?;
    let controller_metrics =
        ControllerMetrics::register(&registry).context("registering metrics")?;
    let proxy = Arc::new(Proxy::new(args.listen.proxy_config(), proxy_metrics));

    let http = TcpListener::bind(args.listen.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", args.listen.http_addr))?;
    let admin = TcpListener::bind(args.listen.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.listen.admin_addr))?;
    tracing::info!(http = %http.local_addr()?, admin = %admin.local_addr()?, "Listening.");

    let (tx, mut rx) = watch::channel::<Option<Published>>(None);
    let options = CompileOptions {
        class_name: args.class.ingress_class.clone(),
        controller_name: args.class.controller_name.clone(),
        watch_ingress_without_class: args.class.watch_ingress_without_class,
        allow_static_upstreams: true,
        default_backend: args.class.default_backend.clone(),
    };
    let mut provider = FileProvider::new(
        args.manifests.clone(),
        options,
        Publisher::new(tx, controller_metrics.clone()),
        controller_metrics,
    );
    provider.load().context("loading --manifests")?;
    let provider_task = tokio::spawn(provider.watch());

    // Installs each published snapshot into the data plane.
    let ready = Arc::new(AtomicBool::new(false));
    let installer = {
        let proxy = proxy.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            loop {
                let published = rx.borrow_and_update().clone();
                if let Some(p) = published {
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
        stop_rx.clone(),
    ));
    let mut serve_stop = stop_rx.clone();
    let drain = args.listen.drain_timeout.into();
    let proxy_task = tokio::spawn(weir_proxy::serve(
        Listener {
            socket: http,
            proto: "http",
        },
        proxy,
        async move {
            let _ = serve_stop.wait_for(|s| *s).await;
        },
        drain,
    ));

    shutdown_signal().await;
    tracing::info!("Shutdown requested; no longer ready, draining.");
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let cut = proxy_task.await.context("proxy task")?;
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
