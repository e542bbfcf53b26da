//! Identity-provider stand-ins for the auth tests: a real JWKS HTTP server
//! whose document can change or go away, and token minting with the test
//! keys in `tests/fixtures/jwt`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::net::TcpListener;

/// A test key file's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A test key file's text, indented for a YAML block scalar.
pub fn fixture_yaml_block(name: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    String::from_utf8(fixture(name))
        .expect("utf-8 PEM")
        .lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// The private key of a fixture pair (`rsa1`, `rsa2`, `ec256`, `ed25519`).
pub fn signing_key(name: &str) -> EncodingKey {
    let pem = fixture(&format!("{name}.key.pem"));
    match name {
        n if n.starts_with("rsa") => EncodingKey::from_rsa_pem(&pem),
        n if n.starts_with("ec") => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("fixture key")
}

/// The public JWK of an RSA fixture key, with a `kid`.
pub fn rsa_jwk(name: &str, kid: &str) -> Jwk {
    weir_auth::crypto::install();
    let mut jwk = Jwk::from_encoding_key(&signing_key(name), Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

/// Signs `claims`.
pub fn sign(
    alg: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> String {
    weir_auth::crypto::install();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A JWKS endpoint on a loopback port, serving whatever [`set_keys`] last
/// stored, with `Cache-Control: max-age=300`.
///
/// [`set_keys`]: JwksServer::set_keys
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Documents served.
    pub hits: Arc<AtomicUsize>,
    doc: Arc<Mutex<String>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `keys`.
    pub async fn start(keys: Vec<Jwk>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let doc = Arc::new(Mutex::new(String::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (task_hits, task_doc, task_down) = (hits.clone(), doc.clone(), down.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, doc, down) = (task_hits.clone(), task_doc.clone(), task_down.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::Relaxed);
                        // OpenID Connect discovery: the issuer is this server.
                        let body = if req.uri().path() == "/.well-known/openid-configuration" {
                            serde_json::json!({
                                "issuer": format!("http://{addr}"),
                                "jwks_uri": format!("http://{addr}/jwks.json"),
                            })
                            .to_string()
                        } else {
                            doc.lock().expect("doc").clone()
                        };
                        let status = if down.load(Ordering::Relaxed) {
                            503
                        } else {
                            200
                        };
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .header("cache-control", "public, max-age=300")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let server = JwksServer {
            addr,
            hits,
            doc,
            down,
            task,
        };
        server.set_keys(keys);
        server
    }

    /// Replaces the served keys.
    pub fn set_keys(&self, keys: Vec<Jwk>) {
        *self.doc.lock().expect("doc") =
            serde_json::to_string(&JwkSet { keys }).expect("jwks json");
    }

    /// The issuer whose discovery document this server serves.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The JWKS URI.
    pub fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Whether documents are served (200) or refused (503).
    pub fn set_available(&self, available: bool) {
        self.down.store(!available, Ordering::Relaxed);
    }

    /// The identity provider goes down: open connections get 503 and new
    /// connections are refused.
    pub fn stop(&self) {
        self.down.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
