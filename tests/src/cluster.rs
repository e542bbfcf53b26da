//! Objects the controller tests create through the Kubernetes API: a
//! Service `app` whose EndpointSlice points at a test upstream, and
//! Ingresses `<name>.test` routed to it.

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::upstream::Upstream;

/// Creates Service `app` (port `http` 80) and EndpointSlice `app-1` with the
/// upstream as its one ready endpoint, in `default`.
pub async fn backend(kube: &kube::Client, up: &Upstream) {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"}, "spec": {"ports": [{"name": "http", "port": 80}]}});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "app-1", "labels": {"kubernetes.io/service-name": "app"}}, "addressType": "IPv4",
        "ports": [{"name": "http", "port": up.addr.port()}], "endpoints": [{"addresses": [up.addr.ip().to_string()]}]});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(kube.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(svc).unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(kube.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(slice).unwrap(),
        )
        .await
        .unwrap();
}

/// Ingress `name` for host `<name>.test`, everything to Service `app`.
pub fn ingress(name: &str) -> Ingress {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"ingressClassName": "weir", "rules": [{"host": format!("{name}.test"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app", "port": {"number": 80}}}}]}}]}}))
    .unwrap()
}
