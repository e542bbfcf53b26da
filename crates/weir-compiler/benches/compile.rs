//! Compiling 10,000 Ingresses (each with its Service and EndpointSlice): the
//! cost of one full rebuild at a large cluster's scale.

#![allow(missing_docs)] // criterion_main! generates undocumented items

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_compiler::manifest::parse;
use weir_compiler::{CompileOptions, Inputs, compile};

fn inputs(n: usize) -> Inputs {
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str(&format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{i}, namespace: team-{t}}}
spec:
  ingressClassName: weir
  rules:
  - host: svc-{i}.example.com
    http:
      paths:
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: svc-{i}, port: {{number: 80}}}}}}}}
      - {{path: /health, pathType: Exact, backend: {{service: {{name: svc-{i}, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: team-{t}}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{i}-x, namespace: team-{t}, labels: {{kubernetes.io/service-name: svc-{i}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- addresses: [10.{a}.{b}.1]
- addresses: [10.{a}.{b}.2]
- addresses: [10.{a}.{b}.3]
",
            t = i % 50,
            a = i / 256 % 256,
            b = i % 256
        ));
    }
    let parsed = parse(&yaml);
    assert!(parsed.errors.is_empty());
    let mut inputs = Inputs::default();
    for o in parsed.objects {
        inputs.insert(o);
    }
    inputs
}

fn bench(c: &mut Criterion) {
    let inputs = inputs(10_000);
    let options = CompileOptions::default();
    let compiled = compile(&inputs, &options);
    assert_eq!(compiled.snapshot.route_count(), 20_000);
    assert!(compiled.diagnostics.is_empty());
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("10k ingresses", |b| {
        b.iter(|| compile(black_box(&inputs), black_box(&options)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
