//! HTTP routing and handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::resources::{Custom, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, Filter};
use crate::{LoggedRequest, Shared};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(BoxBody::new(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: &ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// Query parameters; kube sends `?&a=b`, so empty pairs are skipped.
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path names.
struct Target {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...` into a resource target.
fn target(types: &[&'static ResourceType], path: &str) -> Option<Result<Target, ApiError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let (namespace, rest) = match rest {
        // /api/v1/namespaces/{ns}/{plural}... (but not namespaces/{name}[/status])
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return Some(Err(ApiError::no_route())),
    };
    let Some(rt) = types
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
    else {
        return Some(Err(ApiError::no_route()));
    };
    if namespace.is_some() && !rt.namespaced {
        return Some(Err(ApiError::no_route()));
    }
    let status = match sub {
        None => false,
        Some("status") if rt.status => true,
        Some(_) => return Some(Err(ApiError::no_route())),
    };
    Some(Ok(Target {
        rt,
        namespace: if rt.namespaced { namespace } else { None },
        name,
        status,
    }))
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    shared.log(LoggedRequest {
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    });
    let resp = match route(&shared, req, &path).await {
        Ok(r) => r,
        Err(e) => error(&e),
    };
    Ok(resp)
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let types = shared.store().types().to_vec();
    match (req.method(), path) {
        (&Method::GET, "/version") => Ok(full(
            StatusCode::OK,
            &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "", "compiler": "rust", "platform": "linux/amd64"}),
        )),
        (&Method::GET, "/healthz" | "/readyz" | "/livez") => {
            let mut r = Response::new(BoxBody::new(Full::new(Bytes::from_static(b"ok"))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            Ok(r)
        }
        (&Method::GET, "/api") => Ok(full(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        )),
        (&Method::GET, "/apis") => Ok(full(StatusCode::OK, &group_list(&types))),
        (&Method::GET, "/openapi/v3") => Ok(full(StatusCode::OK, &crate::openapi::root(&types))),
        (&Method::GET, p) if p.starts_with("/openapi/v3/") => {
            let rest = &p["/openapi/v3/".len()..];
            let doc = match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => crate::openapi::group_version_doc(&types, "", v),
                ["apis", g, v] => crate::openapi::group_version_doc(&types, g, v),
                _ => None,
            };
            doc.map(|d| full(StatusCode::OK, &d))
                .ok_or_else(ApiError::no_route)
        }
        (&Method::POST, "/__test/compact") => {
            shared.store().compact();
            Ok(full(StatusCode::OK, &json!({})))
        }
        (&Method::POST, "/__test/drop-watches") => {
            shared.drop_watches.send_modify(|n| *n += 1);
            Ok(full(StatusCode::OK, &json!({})))
        }
        (&Method::POST, "/__test/bookmark") => {
            shared.bookmark.notify_waiters();
            Ok(full(StatusCode::OK, &json!({})))
        }
        _ => {
            if let Some(list) = discovery(&types, path) {
                return Ok(full(StatusCode::OK, &list));
            }
            let target = target(&types, path).ok_or_else(ApiError::no_route)??;
            resource(shared, req, target).await
        }
    }
}

/// The versions each group serves, groups in order.
fn groups(
    types: &[&'static ResourceType],
) -> std::collections::BTreeMap<&'static str, Vec<&'static str>> {
    let mut out: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for r in types.iter().filter(|r| !r.group.is_empty()) {
        let versions = out.entry(r.group).or_default();
        if !versions.contains(&r.version) {
            versions.push(r.version);
        }
    }
    out
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null)})
}

fn group_list(types: &[&'static ResourceType]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(g, vs)| api_group(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1`, `/apis/<g>/<v>` and `/apis/<g>`.
fn discovery(types: &[&'static ResourceType], path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version) = match segs.as_slice() {
        ["api", "v1"] => ("", "v1"),
        ["apis", g, v] => (*g, *v),
        ["apis", g] => {
            let all = groups(types);
            return all.get(g).map(|vs| api_group(g, vs));
        }
        _ => return None,
    };
    let mut resources = Vec::new();
    for r in types
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "shortNames": r.short_names,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}));
        if r.status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

async fn body_json(req: Request<Incoming>) -> Result<(Value, String), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?
        .to_bytes();
    // Only JSON bodies are understood (kubectl and kube send JSON for apply
    // patches too); protobuf and CBOR get 415 so clients fall back to JSON.
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.is_empty() && !mime.contains("json") && mime != "application/apply-patch+yaml" {
        return Err(ApiError::unsupported_media_type(mime));
    }
    if bytes.is_empty() {
        return Ok((Value::Null, content_type));
    }
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok((v, content_type))
}

async fn resource(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    t: Target,
) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let ns = t.namespace.as_deref();
    // Custom resources print as a Table when asked (kubectl get).
    let table = t.rt.custom.filter(|_| {
        !t.status
            && req
                .headers()
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(crate::table::wanted)
    });
    match (req.method().clone(), t.name.as_deref()) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(shared, t, &q)
        }
        (Method::GET, None) => list(shared, t.rt, ns, &q, table),
        (Method::GET, Some(name)) => {
            let store = shared.store();
            let obj = store.get(t.rt, ns, name)?;
            match table {
                Some(custom) => {
                    let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
                    Ok(full(
                        StatusCode::OK,
                        &crate::table::render(custom, std::slice::from_ref(&obj), rv, unix_now()),
                    ))
                }
                None => Ok(full(StatusCode::OK, &obj)),
            }
        }
        (Method::DELETE, None) => {
            // deletecollection: every selected object, each like a DELETE.
            let filter = filter_from(t.rt, ns, &q)?;
            let (options, _) = body_json(req).await?;
            let mut store = shared.store();
            let selected = store.current(t.rt, &filter);
            let mut deleted = Vec::new();
            for obj in selected {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let obj_ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                deleted.push(store.delete(t.rt, obj_ns.as_deref(), &name, &options)?);
            }
            Ok(full(
                StatusCode::OK,
                &json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(),
                        "metadata": {"resourceVersion": store.rv().to_string()}, "items": deleted}),
            ))
        }
        (Method::POST, None) => {
            let (body, _) = body_json(req).await?;
            let created = shared.store().create(t.rt, ns, body)?;
            Ok(full(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(name)) => {
            let (body, _) = body_json(req).await?;
            if let Some(body_name) = body.pointer("/metadata/name").and_then(Value::as_str)
                && body_name != name
            {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            Ok(full(
                StatusCode::OK,
                &shared.store().replace(t.rt, ns, name, body, t.status)?,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let (patch, content_type) = body_json(req).await?;
            patch_object(shared, t.rt, ns, name, &patch, &content_type, t.status)
        }
        (Method::DELETE, Some(name)) => {
            let (options, _) = body_json(req).await?;
            Ok(full(
                StatusCode::OK,
                &shared.store().delete(t.rt, ns, name, &options)?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn patch_object(
    shared: &Arc<Shared>,
    rt: &'static ResourceType,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
    content_type: &str,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let mut store = shared.store();
    let current = match store.get(rt, ns, name) {
        Ok(v) => v,
        // Server-side apply creates what does not exist.
        Err(e) if e.code == 404 && mime == "application/apply-patch+yaml" && !status => {
            let mut body = patch.clone();
            body["metadata"]["name"] = json!(name);
            let created = store.create(rt, ns, body)?;
            return Ok(full(StatusCode::CREATED, &created));
        }
        Err(e) => return Err(e),
    };
    let mut doc = current.clone();
    match mime {
        "application/merge-patch+json" | "application/apply-patch+yaml" => {
            json_patch::merge(&mut doc, patch)
        }
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // Op by op on a copy (all or nothing). As the API server does, a
            // `test` for null passes when the path is absent: kube-runtime's
            // finalizer helper relies on it to add the first finalizer.
            for op in ops.0 {
                if let json_patch::PatchOperation::Test(t) = &op
                    && t.value.is_null()
                    && doc.pointer(t.path.as_str()).is_none()
                {
                    continue;
                }
                json_patch::patch(&mut doc, &[op]).map_err(|e| {
                    ApiError::invalid(format!("the JSON patch could not be applied: {e}"))
                })?;
            }
        }
        "application/strategic-merge-patch+json" if rt.builtin => {
            crate::smp::apply(rt.kind, &mut doc, patch)?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    // A resourceVersion in the patch is a precondition; otherwise the patch
    // applies to whatever is current.
    let sent_rv = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if let Some(m) = doc.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        match sent_rv {
            Some(rv) => m.insert("resourceVersion".into(), json!(rv)),
            None => m.insert(
                "resourceVersion".into(),
                current["metadata"]["resourceVersion"].clone(),
            ),
        };
    }
    Ok(full(
        StatusCode::OK,
        &store.replace(rt, ns, name, doc, status)?,
    ))
}

fn filter_from(
    rt: &ResourceType,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Filter, ApiError> {
    Ok(Filter {
        namespace: ns.map(str::to_owned),
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), rt.kind)?,
    })
}

fn list(
    shared: &Arc<Shared>,
    rt: &'static ResourceType,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    table: Option<&'static Custom>,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_from(rt, ns, q)?;
    let limit = q.get("limit").and_then(|l| l.parse().ok());
    let mut store = shared.store();
    if q.get("resourceVersionMatch").is_some_and(|m| m == "Exact")
        && let Some(rv) = q.get("resourceVersion")
        && rv != &store.rv().to_string()
    {
        return Err(ApiError::expired(format!(
            "too old resource version: {rv} ({})",
            store.rv()
        )));
    }
    let (items, rv, token) = store.list(
        rt,
        &filter,
        limit,
        q.get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    )?;
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = &token {
        meta["continue"] = json!(token);
        meta["remainingItemCount"] = json!(store.remaining(token));
    }
    if let Some(custom) = table {
        let mut t = crate::table::render(custom, &items, &rv.to_string(), unix_now());
        t["metadata"] = meta;
        return Ok(full(StatusCode::OK, &t));
    }
    Ok(full(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items}),
    ))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: &Arc<Shared>,
    t: Target,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let rt = t.rt;
    let filter = filter_from(rt, t.namespace.as_deref(), q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let initial_events = q.get("sendInitialEvents").is_some_and(|b| b == "true");
    if initial_events && !bookmarks {
        return Err(ApiError::invalid(
            "sendInitialEvents requires allowWatchBookmarks=true",
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    // Subscribe and take the initial state under one lock: no gap, no repeat.
    let (mut first, live, cursor) = {
        let store = shared.store();
        match store.subscribe(from) {
            Err(too_old) => {
                let status = ApiError::expired(format!(
                    "too old resource version: {too_old} ({})",
                    store.rv()
                ))
                .to_status();
                let _ = tx.try_send(line("ERROR", &status));
                drop(tx);
                return Ok(stream_response(rx));
            }
            Ok((replay, live, rv)) => {
                let mut first: Vec<Bytes> = Vec::new();
                if from.is_none() {
                    for obj in store.current(rt, &filter) {
                        first.push(line("ADDED", &obj));
                    }
                    if initial_events {
                        let mark = json!({"apiVersion": rt.api_version(), "kind": rt.kind,
                            "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                        first.push(line("BOOKMARK", &mark));
                    }
                }
                for e in &replay {
                    if let Some(b) = render(e, rt, &filter) {
                        first.push(b);
                    }
                }
                let cursor = replay.last().map_or(rv, |e| e.rv.max(rv));
                (first, live, cursor)
            }
        }
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        for b in first.drain(..) {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        pump(shared, rt, filter, live, tx, cursor, bookmarks, timeout).await;
    });
    Ok(stream_response(rx))
}

/// Renders one event for a watch, turning selector transitions into
/// ADDED/DELETED the way the API server does.
fn render(e: &crate::store::Event, rt: &'static ResourceType, filter: &Filter) -> Option<Bytes> {
    if !e.rt.same_storage(rt) {
        return None;
    }
    let now = filter.matches(&e.new);
    let before = e.old.as_ref().is_some_and(|o| filter.matches(o));
    let kind = match e.kind {
        EventType::Added if now => EventType::Added,
        EventType::Modified if now && before => EventType::Modified,
        EventType::Modified if now => EventType::Added,
        EventType::Modified if before => EventType::Deleted,
        EventType::Deleted if before || now => EventType::Deleted,
        _ => return None,
    };
    Some(line(kind.as_str(), &e.new))
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    shared: Arc<Shared>,
    rt: &'static ResourceType,
    filter: Filter,
    mut live: broadcast::Receiver<Arc<crate::store::Event>>,
    tx: mpsc::Sender<Bytes>,
    mut cursor: u64,
    bookmarks: bool,
    timeout: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.options.bookmark_interval);
    ticker.tick().await;
    let mut dropped = shared.drop_watches.subscribe();
    dropped.borrow_and_update();
    loop {
        let bookmark = tokio::select! {
            _ = &mut deadline => return,
            _ = dropped.changed() => return,
            _ = tx.closed() => return,
            event = live.recv() => match event {
                Ok(e) => {
                    // The live channel only carries events after the
                    // subscription, so nothing here repeats the replay.
                    cursor = cursor.max(e.rv);
                    if let Some(b) = render(&e, rt, &filter)
                        && tx.send(b).await.is_err()
                    {
                        return;
                    }
                    false
                }
                // A watch that fell behind is closed, never silently skipped:
                // the client resumes from its last rv or relists on 410.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => true,
            _ = shared.bookmark.notified() => true,
        };
        if bookmark && bookmarks {
            let mark = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"resourceVersion": cursor.to_string()}});
            if tx.send(line("BOOKMARK", &mark)).await.is_err() {
                return;
            }
        }
    }
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BoxBody::new(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
