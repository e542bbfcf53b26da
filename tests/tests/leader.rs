//! Two `weir run` replicas against one API server: exactly one leads and
//! only it writes Ingress status; both serve traffic all along; when the
//! leader dies the other takes over within the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use weir_testkube::{Options, TestApiServer};
use weir_tests::client::{get, http1};
use weir_tests::cluster::{backend, ingress};
use weir_tests::upstream::Upstream;
use weir_tests::weir::Weir;
use weir_tests::{await_status, eventually};

fn lb_ip(i: &Ingress) -> Option<String> {
    i.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_and_the_other_takes_over() {
    let server = TestApiServer::start(Options::default()).await.unwrap();
    let kube = server.client().unwrap();
    let up = Upstream::start("app").await;
    // Objects first, through the API, as kubectl would create them.
    backend(&kube, &up).await;
    let ingresses: Api<Ingress> = Api::namespaced(kube.clone(), "default");
    ingresses
        .create(&PostParams::default(), &ingress("web"))
        .await
        .unwrap();

    let timing = [
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "1s",
        "--retry-period",
        "200ms",
    ];
    let a_args: Vec<&str> = [&["--publish-address", "192.0.2.1"][..], &timing].concat();
    let b_args: Vec<&str> = [&["--publish-address", "192.0.2.2"][..], &timing].concat();
    let mut a = Weir::run(server.kubeconfig_path(), &a_args).await;
    let mut b = Weir::run(server.kubeconfig_path(), &b_args).await;
    let leases: Api<Lease> = Api::namespaced(kube.clone(), "default");
    let holder = || async {
        let l = leases.get_opt("weir-leader").await.ok()??;
        l.spec?.holder_identity
    };
    let leader_pid = eventually(Duration::from_secs(10), "a leader", || async {
        holder()
            .await
            .and_then(|h| h.rsplit('-').next()?.parse::<u32>().ok())
    })
    .await;
    assert!(
        leader_pid == a.pid() || leader_pid == b.pid(),
        "lease held by neither replica"
    );
    // Sampled every 50 ms for 2 s: at most one replica believes it leads,
    // and it is the Lease holder.
    let client = http1();
    for _ in 0..40 {
        let mut leading = Vec::new();
        for w in [&a, &b] {
            let m = get(&client, w.admin, "x", "/metrics", &[]).await.unwrap();
            if String::from_utf8_lossy(&m.body)
                .lines()
                .any(|l| l == "weir_leader 1")
            {
                leading.push(w.pid());
            }
        }
        assert!(
            leading.len() <= 1,
            "two replicas believe they lead: {leading:?}"
        );
        if let Some(pid) = leading.first() {
            assert_eq!(
                *pid, leader_pid,
                "a replica that does not hold the Lease believes it leads"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader_ip, follower_ip) = if leader_pid == a.pid() {
        ("192.0.2.1", "192.0.2.2")
    } else {
        ("192.0.2.2", "192.0.2.1")
    };

    eventually(Duration::from_secs(10), "the leader's status", || async {
        let i = ingresses.get("web").await.ok()?;
        (lb_ip(&i).as_deref() == Some(leader_ip)).then_some(())
    })
    .await;
    // Recompiles on both replicas; status must stay the leader's, and both
    // replicas serve every route.
    for n in 0..3 {
        let name = format!("more-{n}");
        ingresses
            .create(&PostParams::default(), &ingress(&name))
            .await
            .unwrap();
        for w in [&a, &b] {
            let addr = w.http;
            let host = format!("{name}.test");
            await_status(addr, &host, 200, "both replicas to serve the new route").await;
        }
        let statuses: Vec<Option<String>> = ingresses
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(lb_ip)
            .collect();
        assert!(
            statuses.iter().all(|s| s.as_deref() != Some(follower_ip)),
            "the follower wrote status: {statuses:?}"
        );
    }
    let transitions_before = leases
        .get("weir-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions
        .unwrap_or(0);

    // The leader crashes; the follower takes over within the lease duration
    // (plus a retry period and a compile), and rewrites status as its own.
    let killed_at = tokio::time::Instant::now();
    let survivor = if leader_pid == a.pid() {
        a.kill();
        &b
    } else {
        b.kill();
        &a
    };
    eventually(
        Duration::from_secs(10),
        "the follower to take over",
        || async {
            let h = holder().await?;
            (h.ends_with(&format!("-{}", survivor.pid()))).then_some(())
        },
    )
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("leader killed -> lease taken over in {takeover:?} (lease duration 2s)");
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    let transitions = leases
        .get("weir-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions
        .unwrap_or(0);
    assert_eq!(transitions, transitions_before + 1);
    eventually(
        Duration::from_secs(10),
        "the new leader's status",
        || async {
            let i = ingresses.get("web").await.ok()?;
            (lb_ip(&i).as_deref() == Some(follower_ip)).then_some(())
        },
    )
    .await;
    assert_eq!(
        get(&client, survivor.http, "web.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
}
