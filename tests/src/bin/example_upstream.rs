//! The upstream `make run` starts next to weir: answers every request with a
//! JSON echo of what it received (method, URI, headers), so a newcomer can
//! see what weir forwards.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weir-example-upstream: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("weir-example-upstream: echoing requests on http://{addr}");
    let _upstream = weir_tests::upstream::Upstream::serve("example", listener);
    let _ = tokio::signal::ctrl_c().await;
}
