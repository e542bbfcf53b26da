//! GatewayPolicies through the Kubernetes API: `weir run` starts before the
//! CRD exists and picks it up when it is applied; kubectl-applied policies
//! and consumer Secrets are enforced; the leader writes policy status and
//! Events; only the Secrets policies use are cached.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use weir_testkube::{Options, TestApiServer};
use weir_tests::client::{get, http1};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{await_status, eventually};

struct Kubectl<'a> {
    server: &'a TestApiServer,
    cache: std::path::PathBuf,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.server.kubeconfig_path())
            .args(args)
            .env("KUBECACHEDIR", &self.cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl must be installed for the controller tests");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        self.ok(&["apply", "-f", "-"], Some(yaml));
    }

    /// `kubectl get gatewaypolicy NAME -o jsonpath=...`.
    fn jsonpath(&self, policy: &str, path: &str) -> String {
        let output = format!("jsonpath={{{path}}}");
        self.ok(&["get", "gatewaypolicy", policy, "-o", &output], None)
    }

    /// A field (`status`, `reason`) of the policy's Accepted condition.
    fn condition(&self, policy: &str, field: &str) -> String {
        self.jsonpath(
            policy,
            &format!(".status.conditions[?(@.type==\"Accepted\")].{field}"),
        )
    }

    /// Waits up to 10 s for the Accepted condition's `field` to be `want`.
    async fn await_accepted(&self, policy: &str, field: &str, want: &str) {
        let what = format!("Accepted {field} {want} on {policy}");
        eventually(Duration::from_secs(10), &what, || async {
            (self.condition(policy, field) == want).then_some(())
        })
        .await;
    }
}

fn backend_yaml(up: &Upstream) -> String {
    let (ip, port) = (up.addr.ip(), up.addr.port());
    let ingress = |name: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: weir
  rules: [{{host: {name}.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]}}}}]
"
        )
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: default, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [\"{ip}\"]}}]
---
{}---
{}",
        ingress("partners"),
        ingress("other")
    )
}

const POLICY: &str = "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: partners, namespace: default}
spec:
  targetRefs: [{kind: Ingress, name: partners}]
  authentication:
    apiKeys:
      header: X-API-Key
      secretSelector: {matchLabels: {weir.dev/consumer: \"true\"}}
---
apiVersion: v1
kind: Secret
metadata: {name: acme, namespace: default, labels: {weir.dev/consumer: \"true\"}}
stringData: {key: acme-key-0123456789}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: default}
stringData: {password: not-for-weir}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated-2, namespace: default}
stringData: {password: not-for-weir-either}
";

const BROKEN: &str = "apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: broken, namespace: default}
spec:
  targetRefs: [{kind: Ingress, name: other}]
  authentication:
    jwt:
      providers: [{name: main, issuer: x, hmacSecret: {name: not-there}}]
";

/// `GET partners.test/` with acme's API key.
async fn partners_with_key(
    client: &weir_tests::client::Http1,
    weir: &Weir,
) -> weir_tests::client::Reply {
    let key = [("x-api-key", "acme-key-0123456789")];
    get(client, weir.http, "partners.test", "/", &key)
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // kubectl calls block a thread
async fn policies_through_kubectl() {
    let server = TestApiServer::start(Options::default())
        .await
        .expect("test API server");
    let kubectl = Kubectl {
        server: &server,
        cache: std::env::temp_dir().join(format!("weir-policy-cache-{}", std::process::id())),
    };
    let up = Upstream::start("app").await;
    // weir starts before the CRD exists: it serves Ingresses meanwhile.
    let weir = Weir::run(server.kubeconfig_path(), &["--publish-address", "10.0.0.1"]).await;
    kubectl.apply(&backend_yaml(&up));
    await_status(
        weir.http,
        "partners.test",
        200,
        "the Ingress to serve before any policy",
    )
    .await;

    let crd = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/gatewaypolicies.weir.dev.yaml"
    ))
    .expect("CRD file");
    kubectl.apply(&crd);
    kubectl.ok(
        &[
            "wait",
            "--for=condition=established",
            "--timeout=10s",
            "crd/gatewaypolicies.weir.dev",
        ],
        None,
    );
    // `kubectl explain` reads the descriptions the CRD publishes.
    let explained = kubectl.ok(
        &["explain", "gatewaypolicy.spec.authentication.jwt.providers"],
        None,
    );
    for expected in [
        "KIND:       GatewayPolicy",
        "oidcDiscovery",
        "issuer",
        "-required-",
    ] {
        assert!(
            explained.contains(expected),
            "{expected:?} in:\n{explained}"
        );
    }
    kubectl.apply(POLICY);
    // Picked up without a restart (the watch retries with backoff until the
    // CRD is served).
    await_status(weir.http, "partners.test", 401, "the policy to be enforced").await;
    let client = http1();
    let r = partners_with_key(&client, &weir).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-consumer"], "acme");

    kubectl.await_accepted("partners", "status", "True").await;
    let targets = kubectl.jsonpath("partners", ".status.targets");
    assert_eq!(targets, "Ingress/partners");

    // A bad edit of a working policy: the last valid version stays
    // enforced (no 503s, no open door) and the status says so.
    kubectl.apply(&POLICY.replace(
        "  authentication:\n",
        "  cors: {allowOrigins: [\"*\"]}\n  authentication:\n",
    ));
    kubectl
        .await_accepted("partners", "reason", "Unsupported")
        .await;
    let programmed = kubectl.jsonpath(
        "partners",
        ".status.conditions[?(@.type==\"Programmed\")].reason",
    );
    assert_eq!(programmed, "ServingLastGood");
    let r = get(&client, weir.http, "partners.test", "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 401, "the last valid version is still enforced");
    let r = partners_with_key(&client, &weir).await;
    assert_eq!(r.status, 200);
    kubectl.apply(POLICY);
    kubectl.await_accepted("partners", "status", "True").await;

    // An invalid policy: Accepted=False with the reason, an Event, its own
    // route fails closed, the other policy's route is untouched.
    kubectl.apply(BROKEN);
    kubectl.await_accepted("broken", "status", "False").await;
    assert_eq!(kubectl.condition("broken", "reason"), "SecretNotFound");
    // What an operator sees: the CRD's printer columns, Reason with -o wide.
    let table = kubectl.ok(&["get", "gatewaypolicies", "-o", "wide"], None);
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert!(
        table.starts_with("NAME") && table.lines().next().unwrap_or("").contains("ACCEPTED"),
        "{table}"
    );
    assert_eq!(
        row("partners")[1..3],
        ["Ingress/partners", "True"],
        "{table}"
    );
    assert_eq!(row("broken")[2..4], ["False", "SecretNotFound"], "{table}");
    await_status(
        weir.http,
        "other.test",
        503,
        "the broken policy's route to fail closed",
    )
    .await;
    let r = partners_with_key(&client, &weir).await;
    assert_eq!(r.status, 200, "other routes keep serving");
    let kube = server.client().expect("client");
    let events: Api<Event> = Api::namespaced(kube, "default");
    eventually(
        Duration::from_secs(10),
        "an Event on the broken policy",
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                            == Some("GatewayPolicy")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some("broken")
                            && e.reason.as_deref() == Some("SecretNotFound")
                    })
                    .then_some(())
            }
        },
    )
    .await;

    let text = weir.metrics().await.expect("metrics");
    assert!(
        text.contains("weir_objects_invalid{kind=\"GatewayPolicy\"} 1"),
        "{text}"
    );

    // Fixing it: the Secret appears, the policy is accepted and enforced.
    kubectl.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: not-there, namespace: default}\nstringData: {secret: an-hmac-secret-of-at-least-32-bytes!}\n",
    );
    kubectl.await_accepted("broken", "status", "True").await;
    await_status(
        weir.http,
        "other.test",
        401,
        "the fixed policy to require a token",
    )
    .await;

    // Only the Secrets policies use are cached: acme (selected) and
    // not-there (named), not the two unrelated ones.
    let text = weir.metrics().await.expect("metrics");
    assert!(text.contains("weir_objects{kind=\"Secret\"} 2"), "{text}");
    assert!(
        text.contains("weir_objects_invalid{kind=\"GatewayPolicy\"} 0"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&kubectl.cache);
}
