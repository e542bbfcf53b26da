//! Golden-file tests: `tests/golden/<case>.in.yaml` (the manifests a user
//! would apply, plus an optional `kind: TestOptions` document) compiles to
//! exactly `tests/golden/<case>.out.yaml` (snapshot, diagnostics, accepted
//! Ingresses). `UPDATE_GOLDEN=1 cargo test -p weir-compiler --test golden`
//! (or `make golden`) rewrites the outputs; review them as a diff.

use std::path::Path;

use serde::Serialize;
use serde_norway::Value;
use weir_compiler::{CompileOptions, Compiled, Inputs, compile, manifest};

#[derive(Serialize)]
struct Output<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    manifest_errors: Vec<String>,
    #[serde(flatten)]
    compiled: &'a Compiled,
}

fn options(text: &str) -> CompileOptions {
    let mut options = CompileOptions {
        allow_static_upstreams: true,
        ..CompileOptions::default()
    };
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("golden input is valid YAML");
        if v.get("kind").and_then(Value::as_str) != Some("TestOptions") {
            continue;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let b = |k: &str| v.get(k).and_then(Value::as_bool);
        if let Some(c) = s("className") {
            options.class_name = c;
        }
        if let Some(c) = s("controllerName") {
            options.controller_name = c;
        }
        if let Some(w) = b("watchIngressWithoutClass") {
            options.watch_ingress_without_class = w;
        }
        if let Some(a) = b("allowStaticUpstreams") {
            options.allow_static_upstreams = a;
        }
        if let Some(r) = s("replicasService") {
            let (ns, name) = r
                .split_once('/')
                .expect("replicasService is namespace/name");
            options.replicas_service = Some((ns.to_owned(), name.to_owned()));
        }
        if let Some(d) = s("defaultBackend") {
            options.default_backend = Some(d.parse().expect("valid defaultBackend"));
        }
    }
    options
}

fn run_case(input: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(input).unwrap();
    let parsed = manifest::parse(&text);
    let mut inputs = Inputs::default();
    for object in parsed.objects {
        inputs.insert(object);
    }
    let compiled = compile(&inputs, &options(&text));
    // Determinism: a second compile of the same inputs is identical.
    assert_eq!(
        compiled,
        compile(&inputs, &options(&text)),
        "{input:?}: compile is not deterministic"
    );
    let output = Output {
        manifest_errors: parsed.errors.iter().map(ToString::to_string).collect(),
        compiled: &compiled,
    };
    let actual = serde_norway::to_string(&output).unwrap();
    let out_path = input.with_file_name(
        input
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".in.yaml", ".out.yaml"),
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&out_path, &actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&out_path)
        .map_err(|e| format!("{out_path:?}: {e} (run `make golden` to create it)"))?;
    if expected != actual {
        return Err(format!(
            "{} differs from the compiler's output (run `make golden` and review the diff):\n--- actual\n{actual}",
            out_path.display()
        ));
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".in.yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "expected at least 30 golden cases, found {}",
        cases.len()
    );
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
