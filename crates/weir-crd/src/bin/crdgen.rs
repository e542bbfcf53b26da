//! Writes the GatewayPolicy CRD YAML (`crds/` and the Helm chart's
//! `crds/`), or checks both with `--check`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = match weir_crd::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let check = std::env::args().any(|a| a == "--check");
    let mut ok = true;
    for path in weir_crd::CRD_PATHS.map(|p| root.join(p)) {
        if check {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                eprintln!(
                    "crdgen: {} is stale; run `cargo run -p weir-crd --bin crdgen`",
                    path.display()
                );
                ok = false;
            }
            continue;
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("crdgen: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        match std::fs::write(&path, &yaml) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("crdgen: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
