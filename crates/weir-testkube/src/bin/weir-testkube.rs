//! Runs the test API server by hand: `weir-testkube [--tls] --port N --kubeconfig-out FILE`,
//! then point kubectl at it with `KUBECONFIG=FILE`.

use std::time::Duration;

use weir_testkube::{Options, TestApiServer};

#[tokio::main]
async fn main() {
    let mut port = 0u16;
    let mut out: Option<String> = None;
    let mut tls = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            "--kubeconfig-out" => out = args.next(),
            "--tls" => tls = true,
            "-h" | "--help" => {
                println!("usage: weir-testkube [--tls] [--port N] [--kubeconfig-out FILE]");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; see --help");
                std::process::exit(2);
            }
        }
    }
    let options = Options {
        addr: ([127, 0, 0, 1], port).into(),
        bookmark_interval: Duration::from_secs(5),
        tls,
        ..Options::default()
    };
    let server = match TestApiServer::start(options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir-testkube: {e}");
            std::process::exit(1);
        }
    };
    if let Some(out) = out
        && let Err(e) = std::fs::copy(server.kubeconfig_path(), &out)
    {
        eprintln!("weir-testkube: writing {out}: {e}");
        std::process::exit(1);
    }
    eprintln!(
        "weir-testkube serving on {} (kubeconfig {})",
        server.url(),
        server.kubeconfig_path().display()
    );
    let _ = tokio::signal::ctrl_c().await;
}
