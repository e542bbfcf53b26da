//! The Ingress annotations weir understands, and what happens to the rest.
//!
//! weir reads `weir.dev/*` and a safe subset of `nginx.ingress.kubernetes.io/*`
//! so a manifest written for the retired ingress-nginx works unchanged where it
//! can. Three outcomes for an annotation in those two namespaces:
//! - understood: applied to the Ingress's routes;
//! - refused: the whole Ingress is rejected. Snippets (raw nginx config, the
//!   source of ingress-nginx's worst CVEs) and access-control annotations weir
//!   does not implement yet: serving the routes without the protection the
//!   author asked for would fail open;
//! - not supported: served without it, with a warning naming the annotation.
//!
//! Annotations in other namespaces belong to other tools and are ignored.

use std::collections::BTreeMap;

use weir_snapshot::{NextUpstream, UpstreamProtocol};

use crate::diagnostics::Reporter;
use crate::duration::parse_duration_ms;

/// `weir.dev/request-timeout`: upstream response-header timeout, Go duration.
pub const WEIR_REQUEST_TIMEOUT: &str = "weir.dev/request-timeout";
/// `weir.dev/connect-timeout`: how long connecting to a backend (TCP, TLS,
/// HTTP/2 handshake) may take before 504, Go duration.
pub const WEIR_CONNECT_TIMEOUT: &str = "weir.dev/connect-timeout";
/// ingress-nginx's spelling (`proxy_connect_timeout`), in seconds.
const NGINX_PROXY_CONNECT_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-connect-timeout";
/// `weir.dev/send-timeout`: the longest pause while a backend takes
/// nothing of a streaming request body, Go duration (default: the request
/// timeout).
pub const WEIR_SEND_TIMEOUT: &str = "weir.dev/send-timeout";
/// ingress-nginx's spelling (`proxy_send_timeout`: the time between two
/// writes to the backend), in seconds.
const NGINX_PROXY_SEND_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-send-timeout";
/// ingress-nginx: in which cases a request goes to the next endpoint
/// (`error timeout` by default, or `off`).
const NGINX_PROXY_NEXT_UPSTREAM: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream";
/// ingress-nginx: how many endpoints one request may try (3; `0` for all).
const NGINX_PROXY_NEXT_UPSTREAM_TRIES: &str =
    "nginx.ingress.kubernetes.io/proxy-next-upstream-tries";
/// `weir.dev/access-log`: `"false"` keeps this Ingress's requests out of
/// the access log.
pub const WEIR_ACCESS_LOG: &str = "weir.dev/access-log";
/// ingress-nginx's spelling of the same switch, honoured for migrants.
const NGINX_ENABLE_ACCESS_LOG: &str = "nginx.ingress.kubernetes.io/enable-access-log";
/// `weir.dev/ssl-redirect`: `"false"` serves plain HTTP for hosts that have
/// a certificate instead of redirecting to HTTPS (default `"true"`).
pub const WEIR_SSL_REDIRECT: &str = "weir.dev/ssl-redirect";
/// ingress-nginx's spelling of the same switch.
const NGINX_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";
/// ingress-nginx: redirect to HTTPS even when the Ingress has no TLS section
/// (TLS terminated in front of weir, or by another Ingress's certificate).
const NGINX_FORCE_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/force-ssl-redirect";
/// `weir.dev/backend-protocol`, on an Ingress (its backends) or a Service
/// (every Ingress that routes to it): `http`, `h2c`, `https` or `h2`.
pub const WEIR_BACKEND_PROTOCOL: &str = "weir.dev/backend-protocol";
/// ingress-nginx's spelling: `HTTP`, `HTTPS`, `GRPC`, `GRPCS`, `AUTO_HTTP`.
const NGINX_BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
/// `weir.dev/backend-ca-secret`: a Secret in the Ingress's namespace whose
/// `ca.crt` (PEM) verifies the certificates of TLS backends.
pub const WEIR_BACKEND_CA_SECRET: &str = "weir.dev/backend-ca-secret";
/// `weir.dev/backend-server-name`: the name a verified backend's certificate
/// must carry, also sent as SNI (default `<service>.<namespace>.svc`).
pub const WEIR_BACKEND_SERVER_NAME: &str = "weir.dev/backend-server-name";
/// `weir.dev/upstream` on a Service: static endpoints (`host:port,...`), for
/// the manifest-folder provider where no EndpointSlice controller runs.
pub const WEIR_UPSTREAM: &str = "weir.dev/upstream";
/// `weir.dev/max-body-size`: the largest request body the Ingress's routes
/// accept, in nginx size syntax (`512k`, `8m`, `1g`; `0` for no limit).
pub const WEIR_MAX_BODY_SIZE: &str = "weir.dev/max-body-size";
/// ingress-nginx's spelling (`client_max_body_size`), same syntax.
const NGINX_PROXY_BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";
/// The legacy class annotation, still honored when `ingressClassName` is unset.
pub const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

const WEIR_PREFIX: &str = "weir.dev/";
const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";
/// ingress-nginx's read timeout, in seconds: the closest thing to weir's
/// upstream response timeout.
const NGINX_PROXY_READ_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-read-timeout";

/// Annotations that, when not honored, would expose what the author meant to
/// protect. Matched by suffix after the nginx prefix.
fn refused_nginx(name: &str) -> Option<&'static str> {
    if name.ends_with("-snippet") || name == "snippet" {
        return Some(
            "snippet annotations inject raw proxy configuration and are refused; express the intent with weir.dev annotations or a GatewayPolicy",
        );
    }
    const FAIL_OPEN: &[&str] = &[
        "auth-url",
        "auth-type",
        "auth-secret",
        "auth-signin",
        "auth-tls-secret",
        "auth-tls-verify-client",
        "whitelist-source-range",
        "allowlist-source-range",
        "denylist-source-range",
        "global-auth-url",
    ];
    if FAIL_OPEN.contains(&name) {
        return Some(
            "this access-control annotation is not implemented by weir; the Ingress is not served rather than served unprotected (use a GatewayPolicy)",
        );
    }
    None
}

/// A `weir.dev` timeout annotation: a Go duration over zero, as
/// milliseconds.
fn positive_duration(value: &str) -> Result<u64, String> {
    match parse_duration_ms(value)? {
        0 => Err("timeout must be positive".into()),
        ms => Ok(ms),
    }
}

/// An ingress-nginx timeout annotation: whole seconds, 1 to 86400, as
/// milliseconds.
fn nginx_seconds(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(s) if (1..=86_400).contains(&s) => Ok(s * 1000),
        _ => Err(format!(
            "{value:?} is not a number of seconds between 1 and 86400"
        )),
    }
}

/// Which timeout a timeout annotation sets.
enum Timeout {
    /// The upstream response timeout (from the end of the request body).
    Response,
    /// The upstream connect timeout.
    Connect,
    /// The longest pause while the upstream takes no request body.
    Send,
}

/// A timeout annotation: the timeout it sets, the `weir.dev` key that wins
/// over it (its own, for the `weir.dev` ones), and how its value reads.
type TimeoutAnnotation = (Timeout, &'static str, fn(&str) -> Result<u64, String>);

fn timeout_annotation(key: &str) -> Option<TimeoutAnnotation> {
    Some(match key {
        WEIR_REQUEST_TIMEOUT => (Timeout::Response, WEIR_REQUEST_TIMEOUT, positive_duration),
        NGINX_PROXY_READ_TIMEOUT => (Timeout::Response, WEIR_REQUEST_TIMEOUT, nginx_seconds),
        WEIR_CONNECT_TIMEOUT => (Timeout::Connect, WEIR_CONNECT_TIMEOUT, positive_duration),
        NGINX_PROXY_CONNECT_TIMEOUT => (Timeout::Connect, WEIR_CONNECT_TIMEOUT, nginx_seconds),
        WEIR_SEND_TIMEOUT => (Timeout::Send, WEIR_SEND_TIMEOUT, positive_duration),
        NGINX_PROXY_SEND_TIMEOUT => (Timeout::Send, WEIR_SEND_TIMEOUT, nginx_seconds),
        _ => return None,
    })
}

/// `proxy-next-upstream`'s cases: whether refused connections (`error`)
/// and connect timeouts (`timeout`) go to another endpoint, and the cases
/// nginx knows that weir does not act on (it never resends a request that
/// reached an upstream, so it cannot retry on a status or a bad header).
fn next_upstream_cases(value: &str) -> Result<(bool, bool, Vec<&str>), String> {
    const IGNORED: &[&str] = &[
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
    ];
    let cases: Vec<&str> = value.split_whitespace().collect();
    if cases == ["off"] {
        return Ok((false, false, Vec::new()));
    }
    let (mut on_error, mut on_timeout, mut ignored) = (false, false, Vec::new());
    for case in cases.iter().copied() {
        match case {
            "error" => on_error = true,
            "timeout" => on_timeout = true,
            "off" => return Err("\"off\" cannot be combined with other cases".into()),
            c if IGNORED.contains(&c) => ignored.push(c),
            c => {
                return Err(format!(
                    "{c:?} is not a proxy-next-upstream case (error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent; or off alone)"
                ));
            }
        }
    }
    if cases.is_empty() {
        return Err("empty: use \"off\" to turn it off".into());
    }
    Ok((on_error, on_timeout, ignored))
}

/// An nginx size (`client_max_body_size`): bytes, or a number with `k`,
/// `m` or `g` (either case) for KiB, MiB or GiB, as ingress-nginx passes
/// `proxy-body-size` through. `None` for anything else, or an overflow.
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, unit) = match value.as_bytes().last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&value[..value.len() - 1], 1 << 20),
        b'g' | b'G' => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Settings an Ingress's annotations contribute to its routes.
#[derive(Debug, Clone)]
pub(crate) struct IngressSettings {
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) send_timeout_ms: Option<u64>,
    /// `proxy-next-upstream(-tries)`; `None` keeps the default.
    pub(crate) next_upstream: Option<NextUpstream>,
    /// Request body limit in bytes, `Some(0)` for none.
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) access_log_off: bool,
    /// Redirect plain HTTP to HTTPS when the host has a certificate.
    pub(crate) ssl_redirect: bool,
    /// Redirect plain HTTP to HTTPS whether or not it has one.
    pub(crate) force_ssl_redirect: bool,
    /// How to speak to this Ingress's backends; `None` lets each Service
    /// decide.
    pub(crate) backend_protocol: Option<UpstreamProtocol>,
    /// `weir.dev/backend-ca-secret`: verify TLS backends with this Secret's CA.
    pub(crate) backend_ca_secret: Option<String>,
    /// `weir.dev/backend-server-name`.
    pub(crate) backend_server_name: Option<String>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            timeout_ms: None,
            connect_timeout_ms: None,
            send_timeout_ms: None,
            next_upstream: None,
            max_body_bytes: None,
            access_log_off: false,
            ssl_redirect: true,
            force_ssl_redirect: false,
            backend_protocol: None,
            backend_ca_secret: None,
            backend_server_name: None,
        }
    }
}

/// Reads an Ingress's annotations, reporting every one weir refuses or does
/// not support. Errors reported here reject the Ingress.
pub(crate) fn ingress_settings(
    annotations: Option<&BTreeMap<String, String>>,
    report: &mut Reporter<'_>,
) -> IngressSettings {
    let mut settings = IngressSettings::default();
    let Some(annotations) = annotations else {
        return settings;
    };
    let field = |k: &str| Some(format!("metadata.annotations[{k:?}]"));
    for (key, value) in annotations {
        if let Some((timeout, weir_key, parse)) = timeout_annotation(key) {
            // weir.dev wins when both are set.
            if key != weir_key && annotations.contains_key(weir_key) {
                continue;
            }
            let slot = match timeout {
                Timeout::Response => &mut settings.timeout_ms,
                Timeout::Connect => &mut settings.connect_timeout_ms,
                Timeout::Send => &mut settings.send_timeout_ms,
            };
            match parse(value) {
                Ok(ms) => *slot = Some(ms),
                Err(e) => report.error(field(key), "InvalidAnnotation", e),
            }
        } else if key == NGINX_PROXY_NEXT_UPSTREAM {
            let next = settings.next_upstream.get_or_insert(NextUpstream::DEFAULT);
            match next_upstream_cases(value) {
                Ok((on_error, on_timeout, ignored)) => {
                    (next.on_error, next.on_timeout) = (on_error, on_timeout);
                    if !ignored.is_empty() {
                        report.warn(
                            field(key),
                            "AnnotationNotSupported",
                            format!(
                                "weir passes a request to another endpoint only when it got no connection (error, timeout); {} ignored",
                                ignored.join(" ")
                            ),
                        );
                    }
                }
                Err(e) => report.error(field(key), "InvalidAnnotation", e),
            }
        } else if key == NGINX_PROXY_NEXT_UPSTREAM_TRIES {
            let next = settings.next_upstream.get_or_insert(NextUpstream::DEFAULT);
            match value.trim().parse::<u32>() {
                Ok(tries) if tries <= 1000 => next.tries = tries,
                _ => report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!(
                        "{value:?} is not a number of tries between 0 (every endpoint) and 1000"
                    ),
                ),
            }
        } else if key == WEIR_MAX_BODY_SIZE || key == NGINX_PROXY_BODY_SIZE {
            // weir.dev wins when both are set.
            if key == NGINX_PROXY_BODY_SIZE && annotations.contains_key(WEIR_MAX_BODY_SIZE) {
                continue;
            }
            match parse_size(value) {
                Some(bytes) => settings.max_body_bytes = Some(bytes),
                None => report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!("{value:?} is not a size (bytes, or a number with k, m or g: \"8m\"; \"0\" for no limit)"),
                ),
            }
        } else if key == WEIR_ACCESS_LOG || key == NGINX_ENABLE_ACCESS_LOG {
            // weir.dev wins when both are set.
            if key == NGINX_ENABLE_ACCESS_LOG && annotations.contains_key(WEIR_ACCESS_LOG) {
                continue;
            }
            match value.trim() {
                "true" => settings.access_log_off = false,
                "false" => settings.access_log_off = true,
                _ => report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!("{value:?} is not \"true\" or \"false\""),
                ),
            }
        } else if key == WEIR_SSL_REDIRECT
            || key == NGINX_SSL_REDIRECT
            || key == NGINX_FORCE_SSL_REDIRECT
        {
            if key == NGINX_SSL_REDIRECT && annotations.contains_key(WEIR_SSL_REDIRECT) {
                continue;
            }
            let on = match value.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    report.error(
                        field(key),
                        "InvalidAnnotation",
                        format!("{value:?} is not \"true\" or \"false\""),
                    );
                    continue;
                }
            };
            if key == NGINX_FORCE_SSL_REDIRECT {
                settings.force_ssl_redirect = on;
            } else {
                settings.ssl_redirect = on;
            }
        } else if key == WEIR_BACKEND_PROTOCOL || key == NGINX_BACKEND_PROTOCOL {
            if key == NGINX_BACKEND_PROTOCOL && annotations.contains_key(WEIR_BACKEND_PROTOCOL) {
                continue;
            }
            let parsed = if key == WEIR_BACKEND_PROTOCOL {
                parse_backend_protocol(value)
            } else {
                parse_nginx_backend_protocol(value)
            };
            match parsed {
                Ok(p) => settings.backend_protocol = Some(p),
                Err(e) => report.error(field(key), "InvalidAnnotation", e),
            }
        } else if key == WEIR_BACKEND_CA_SECRET {
            let v = value.trim();
            if v.is_empty() || v.contains('/') {
                report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!("{value:?} is not the name of a Secret in this Ingress's namespace"),
                );
            } else {
                settings.backend_ca_secret = Some(v.to_owned());
            }
        } else if key == WEIR_BACKEND_SERVER_NAME {
            let v = value.trim();
            match rustls_pki_types::DnsName::try_from(v) {
                Ok(_) if !annotations.contains_key(WEIR_BACKEND_CA_SECRET) => report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!(
                        "{WEIR_BACKEND_SERVER_NAME} only applies with {WEIR_BACKEND_CA_SECRET}"
                    ),
                ),
                Ok(_) => settings.backend_server_name = Some(v.to_ascii_lowercase()),
                Err(_) => report.error(
                    field(key),
                    "InvalidAnnotation",
                    format!("{value:?} is not a DNS name"),
                ),
            }
        } else if let Some(name) = key.strip_prefix(NGINX_PREFIX) {
            match refused_nginx(name) {
                Some(why) => report.error(field(key), "AnnotationRefused", why.into()),
                None => report.warn(
                    field(key),
                    "AnnotationNotSupported",
                    "ingress-nginx annotation not supported by weir; ignored".into(),
                ),
            }
        } else if key.starts_with(WEIR_PREFIX) {
            report.warn(
                field(key),
                "AnnotationNotSupported",
                "unknown weir.dev annotation; ignored".into(),
            );
        }
    }
    settings
}

/// Parses a `weir.dev/backend-protocol` value.
pub(crate) fn parse_backend_protocol(value: &str) -> Result<UpstreamProtocol, String> {
    match value.trim() {
        "http" => Ok(UpstreamProtocol::Http),
        "h2c" => Ok(UpstreamProtocol::H2c),
        "https" => Ok(UpstreamProtocol::Https),
        "h2" => Ok(UpstreamProtocol::H2),
        _ => Err(format!(
            "{value:?} is not a backend protocol: use http, h2c (HTTP/2 cleartext, gRPC), https or h2 (HTTP/2 over TLS, gRPC with TLS)"
        )),
    }
}

/// Parses ingress-nginx's `backend-protocol` values (case-insensitive, as
/// ingress-nginx reads them). `AUTO_HTTP` is HTTP/1.1, which is what
/// ingress-nginx speaks upstream for it too; `FCGI` is refused: weir does not
/// speak FastCGI, and serving the route over HTTP would only fail later.
fn parse_nginx_backend_protocol(value: &str) -> Result<UpstreamProtocol, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "HTTP" | "AUTO_HTTP" => Ok(UpstreamProtocol::Http),
        "HTTPS" => Ok(UpstreamProtocol::Https),
        "GRPC" => Ok(UpstreamProtocol::H2c),
        "GRPCS" => Ok(UpstreamProtocol::H2),
        "FCGI" => Err("FastCGI backends are not supported by weir".into()),
        _ => Err(format!(
            "{value:?} is not one of HTTP, HTTPS, GRPC, GRPCS or AUTO_HTTP"
        )),
    }
}

/// The protocol a Service port's `appProtocol` asks for, when weir knows it:
/// the Kubernetes-standard `kubernetes.io/h2c` and `kubernetes.io/wss`, and
/// the common unprefixed names. Anything else is HTTP/1.1.
pub(crate) fn app_protocol(value: &str) -> Option<UpstreamProtocol> {
    match value.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" | "h2c" | "grpc" | "http2" => Some(UpstreamProtocol::H2c),
        "https" | "kubernetes.io/wss" | "wss" => Some(UpstreamProtocol::Https),
        "grpcs" | "h2" => Some(UpstreamProtocol::H2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_in_nginx_syntax() {
        for (text, bytes) in [
            ("0", 0),
            ("1024", 1024),
            ("8k", 8 << 10),
            ("8K", 8 << 10),
            ("1m", 1 << 20),
            (" 50M ", 50 << 20),
            ("2g", 2 << 30),
        ] {
            assert_eq!(parse_size(text), Some(bytes), "{text:?}");
        }
        for bad in [
            "",
            "m",
            "1.5m",
            "-1",
            "1mb",
            "1 m",
            "1t",
            "99999999999999999999",
            "18014398509481984k",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
