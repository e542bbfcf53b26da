//! Command-line interface. Every flag can also be set from the environment
//! (`WEIR_<FLAG>`), which is how the Helm chart passes settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weir_compiler::ServiceRef;
use weir_proxy::ProxyConfig;

/// weir: a Kubernetes ingress controller and API gateway.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "json",
        env = "WEIR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `info,weir_proxy=debug`.
    #[arg(long, global = true, default_value = "info", env = "WEIR_LOG_LEVEL")]
    pub log_level: String,
    /// Async worker threads (default: one per CPU; TOKIO_WORKER_THREADS also works).
    #[arg(long, global = true, env = "WEIR_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the Kubernetes manifests in a folder, without a cluster; reloads on change.
    Serve(ServeArgs),
    /// Run as an ingress controller: watch the Kubernetes API and serve what it holds.
    Run(RunArgs),
}

/// `weir run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kubeconfig to use; without it, the in-cluster service account (or the usual kubeconfig lookup).
    #[arg(long, env = "WEIR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (comma-separated); all when unset.
    #[arg(long, value_delimiter = ',', env = "WEIR_WATCH_NAMESPACE")]
    pub watch_namespace: Vec<String>,
    /// weir's own Service (namespace/name): its load-balancer addresses go into Ingress status (overriding --publish-address), and its ready endpoints are the replica count for LocalShare rate limits.
    #[arg(long, value_parser = namespaced_name, env = "WEIR_PUBLISH_SERVICE")]
    pub publish_service: Option<(String, String)>,
    /// Addresses written to Ingress status.loadBalancer (IPs or hostnames, comma-separated); by the leader only.
    #[arg(long, value_delimiter = ',', env = "WEIR_PUBLISH_ADDRESS")]
    pub publish_address: Vec<String>,
    /// Elect one replica to write status (traffic never depends on it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "WEIR_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else default).
    #[arg(long, env = "WEIR_ELECTION_NAMESPACE")]
    pub election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "weir-leader", env = "WEIR_ELECTION_ID")]
    pub election_id: String,
    /// How long a lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = duration, env = "WEIR_LEASE_DURATION")]
    pub lease_duration: Dur,
    /// How long the leader keeps trying to renew before stepping down.
    #[arg(long, default_value = "10s", value_parser = duration, env = "WEIR_RENEW_DEADLINE")]
    pub renew_deadline: Dur,
    /// How often candidates retry and the leader renews.
    #[arg(long, default_value = "2s", value_parser = duration, env = "WEIR_RETRY_PERIOD")]
    pub retry_period: Dur,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub class: ClassArgs,
}

/// Log formats.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// `weir serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Folder of YAML manifests (Ingress, IngressClass, Service, EndpointSlice; multi-document files).
    #[arg(long, env = "WEIR_MANIFESTS")]
    pub manifests: PathBuf,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub class: ClassArgs,
}

/// Listener, limit and timeout flags, shared by every mode.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address of the HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:8080", env = "WEIR_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Address of the HTTPS listener (TLS 1.2/1.3, HTTP/1.1 and h2 by ALPN),
    /// with certificates from Ingress `spec.tls` Secrets chosen by SNI. No
    /// HTTPS listener when unset.
    #[arg(long, env = "WEIR_HTTPS_ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// Secret (namespace/name, type kubernetes.io/tls) presented when no
    /// Ingress certificate matches the SNI name; without it, a self-signed
    /// certificate generated at start-up.
    #[arg(long, value_parser = namespaced_name, env = "WEIR_DEFAULT_SSL_CERTIFICATE")]
    pub default_ssl_certificate: Option<(String, String)>,
    /// Port in the Location of HTTP→HTTPS redirects: where clients reach
    /// HTTPS (the load balancer's port, not necessarily --https-addr's).
    #[arg(long, default_value_t = 443, env = "WEIR_HTTPS_REDIRECT_PORT")]
    pub https_redirect_port: u16,
    /// Strict-Transport-Security max-age in seconds on HTTPS responses of
    /// hosts with a certificate; 0 sends no header.
    #[arg(long, default_value_t = 31_536_000, env = "WEIR_HSTS_MAX_AGE")]
    pub hsts_max_age: u64,
    /// Add includeSubDomains to Strict-Transport-Security.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "WEIR_HSTS_INCLUDE_SUBDOMAINS")]
    pub hsts_include_subdomains: bool,
    /// Add preload to Strict-Transport-Security (only if you submit your
    /// domains to the browsers' preload lists).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, env = "WEIR_HSTS_PRELOAD")]
    pub hsts_preload: bool,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:10254", env = "WEIR_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// How long an upstream has to answer, from the end of the request
    /// body (and the longest pause while a body streams), for routes that
    /// set none.
    #[arg(long, default_value = "60s", value_parser = duration, env = "WEIR_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Dur,
    /// Upstream connect timeout (TCP, TLS, HTTP/2 handshake) for routes that set none.
    #[arg(long, default_value = "5s", value_parser = duration, env = "WEIR_CONNECT_TIMEOUT")]
    pub connect_timeout: Dur,
    /// Time an HTTP/1 client has to send a request head, from its first
    /// byte (for a connection's first request, from the connection
    /// opening): the slowloris guard. Requests in flight are not cut.
    #[arg(long, default_value = "10s", value_parser = duration, env = "WEIR_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Dur,
    /// Idle HTTP/1 client connections (keep-alive, no request under way)
    /// are closed this long after their last response, as nginx's
    /// keepalive_timeout; keep it above the idle timeout of any load
    /// balancer in front. HTTP/2 connections with no stream open get a
    /// GOAWAY after as long.
    #[arg(long, default_value = "75s", value_parser = duration, env = "WEIR_KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Dur,
    /// An HTTP/1 client that takes no byte of its response for this long
    /// (it stopped reading) has its connection closed, as nginx's
    /// send_timeout.
    #[arg(long, default_value = "60s", value_parser = duration, env = "WEIR_CLIENT_SEND_TIMEOUT")]
    pub client_send_timeout: Dur,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, default_value = "30s", value_parser = duration, env = "WEIR_DRAIN_TIMEOUT")]
    pub drain_timeout: Dur,
    /// Largest request body a route accepts unless its Ingress sets
    /// proxy-body-size or weir.dev/max-body-size (413 beyond); nginx size
    /// syntax (512k, 8m, 1g), 0 for no limit. 1m is ingress-nginx's default.
    #[arg(long, default_value = "1m", value_parser = size, env = "WEIR_MAX_BODY_SIZE")]
    pub max_body_size: u64,
    /// Most request headers (431 beyond), at most 1024.
    #[arg(long, default_value_t = 100, value_parser = max_headers, env = "WEIR_MAX_HEADERS")]
    pub max_headers: usize,
    /// Most bytes of request header names and values (431 beyond).
    #[arg(long, default_value_t = 32 * 1024, env = "WEIR_MAX_HEADER_BYTES")]
    pub max_header_bytes: usize,
    /// Longest request target in bytes (414 beyond).
    #[arg(long, default_value_t = 8 * 1024, env = "WEIR_MAX_URI_BYTES")]
    pub max_uri_bytes: usize,
    /// Proxies in front of weir (addresses or CIDR ranges, comma-separated)
    /// whose X-Forwarded-For entries rate limits keyed by clientIP believe.
    #[arg(long, value_delimiter = ',', env = "WEIR_TRUSTED_PROXIES")]
    pub trusted_proxies: Vec<weir_proxy::Cidr>,
    /// Access log: one JSON line per request, written when the response
    /// ends. `stdout`, `off`, or a file path (appended). Routes opt out with
    /// the `weir.dev/access-log: "false"` annotation.
    #[arg(long, default_value = "stdout", value_parser = access_log_destination, env = "WEIR_ACCESS_LOG")]
    pub access_log: weir_proxy::access_log::Destination,
    /// Fraction of requests logged (0 < f <= 1; 0.01 logs one in a
    /// hundred). Responses with a 5xx status are always logged.
    #[arg(long, default_value_t = 1.0, value_parser = sample_fraction, env = "WEIR_ACCESS_LOG_SAMPLE")]
    pub access_log_sample: f64,
    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
}

fn access_log_destination(s: &str) -> Result<weir_proxy::access_log::Destination, String> {
    use weir_proxy::access_log::Destination;
    Ok(match s {
        "off" => Destination::Off,
        "stdout" | "-" => Destination::Stdout,
        "" => return Err("empty: use stdout, off or a file path".into()),
        path => Destination::File(path.into()),
    })
}

/// The HTTP/1 parser keeps its field slots on the stack
/// (`weir_proxy::MAX_REQUEST_FIELDS`).
fn max_headers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=weir_proxy::MAX_REQUEST_FIELDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number from 1 to {}",
            weir_proxy::MAX_REQUEST_FIELDS
        )),
    }
}

fn sample_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction in (0, 1]")),
    }
}

/// Where rate-limit counters live.
#[derive(Args, Debug)]
pub struct RateLimitArgs {
    /// Redis for Global rate limits: redis://host:6379/0 or rediss://...
    /// (repeat, or comma-separate, seed nodes with --redis-cluster). Without
    /// it, Global limits are enforced per replica.
    #[arg(long, value_delimiter = ',', env = "WEIR_REDIS_URL")]
    pub redis_url: Vec<String>,
    /// The Redis URLs are seed nodes of a Redis Cluster.
    #[arg(long, env = "WEIR_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Redis password, when not in the URL (e.g. from a Secret through the
    /// environment).
    #[arg(long, env = "WEIR_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// File holding the Redis password (a mounted Secret key).
    #[arg(long, env = "WEIR_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<std::path::PathBuf>,
    /// PEM file of the CA certificates that sign Redis's certificate, for
    /// rediss:// with a private CA (a mounted Secret or ConfigMap key);
    /// without it, the system's roots.
    #[arg(long, env = "WEIR_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// How long a rate-limit decision waits for Redis before the rule's
    /// onStoreFailure applies.
    #[arg(long, default_value = "100ms", value_parser = duration, env = "WEIR_REDIS_TIMEOUT")]
    pub redis_timeout: Dur,
    /// Most rate-limit buckets kept in memory per replica (local rules and
    /// the localShare fallback); idle and then soonest-expiring buckets are
    /// evicted beyond it.
    #[arg(
        long,
        default_value_t = 1_000_000,
        env = "WEIR_RATELIMIT_LOCAL_CAPACITY"
    )]
    pub ratelimit_local_capacity: usize,
    /// Replicas that share Global limits: while Redis is unreachable, each
    /// enforces limit ÷ this (onStoreFailure: LocalShare). `weir run` with
    /// --publish-service counts the ready endpoints of that Service instead,
    /// and falls back to this while it has none.
    #[arg(long, default_value_t = 1, env = "WEIR_RATELIMIT_REPLICAS")]
    pub ratelimit_replicas: u32,
}

impl RateLimitArgs {
    /// The shared store's configuration, if one is set.
    pub fn redis(&self) -> anyhow::Result<Option<weir_ratelimit::redis::RedisConfig>> {
        use anyhow::Context;
        if self.redis_url.is_empty() {
            return Ok(None);
        }
        let password = match &self.redis_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --redis-password-file {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => self.redis_password.clone(),
        };
        let ca_pem = match &self.redis_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --redis-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Some(weir_ratelimit::redis::RedisConfig {
            urls: self.redis_url.clone(),
            cluster: self.redis_cluster,
            password,
            ca_pem,
            timeout: self.redis_timeout.0,
        }))
    }
}

impl ListenArgs {
    fn hsts(&self) -> Option<http::HeaderValue> {
        if self.hsts_max_age == 0 {
            return None;
        }
        let mut v = format!("max-age={}", self.hsts_max_age);
        if self.hsts_include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.hsts_preload {
            v.push_str("; preload");
        }
        http::HeaderValue::try_from(v).ok()
    }

    pub fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig {
            default_timeout: self.upstream_timeout.into(),
            connect_timeout: self.connect_timeout.into(),
            header_read_timeout: self.header_read_timeout.into(),
            keepalive_timeout: self.keepalive_timeout.into(),
            client_send_timeout: self.client_send_timeout.into(),
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            max_uri_len: self.max_uri_bytes,
            max_body_bytes: self.max_body_size,
            trusted_proxies: self.trusted_proxies.clone(),
            https_redirect_port: self.https_redirect_port,
            hsts: self.hsts(),
            ..ProxyConfig::default()
        }
    }
}

/// Which Ingresses weir serves.
#[derive(Args, Debug)]
pub struct ClassArgs {
    /// IngressClass name weir answers to (also matched against the legacy kubernetes.io/ingress.class annotation).
    #[arg(long, default_value = "weir", env = "WEIR_INGRESS_CLASS")]
    pub ingress_class: String,
    /// spec.controller value that marks an IngressClass as weir's.
    #[arg(
        long,
        default_value = "weir.dev/ingress-controller",
        env = "WEIR_CONTROLLER_NAME"
    )]
    pub controller_name: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long, env = "WEIR_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,
    /// Service that answers requests nothing else matches, as namespace/name:port.
    #[arg(long, value_parser = service_ref, env = "WEIR_DEFAULT_BACKEND")]
    pub default_backend: Option<ServiceRef>,
}

/// A duration flag value (`500ms`, `15s`, `1m30s`).
#[derive(Clone, Copy, Debug)]
pub struct Dur(Duration);

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

fn duration(s: &str) -> Result<Dur, String> {
    weir_compiler::parse_duration_ms(s).map(|ms| Dur(Duration::from_millis(ms)))
}

fn size(s: &str) -> Result<u64, String> {
    weir_compiler::parse_size(s).ok_or_else(|| {
        format!("{s:?} is not a size (bytes, or a number with k, m or g: 8m; 0 for no limit)")
    })
}

fn service_ref(s: &str) -> Result<ServiceRef, String> {
    s.parse()
}

fn namespaced_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}
