//! Objects, the resourceVersion counter, the event history and the
//! broadcast to watchers.
//!
//! Every write does four things under one lock: assign the next rv, store,
//! append to the bounded history, broadcast. A watch subscribes and reads
//! the history under the same lock, so it never misses or repeats an event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::{BUILTIN, Generation, ResourceType, from_crd};
use crate::selector::{FieldSelector, LabelSelector};

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and broadcast to watches.
#[derive(Debug)]
pub struct Event {
    /// The rv the change was given.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The object's type.
    pub rt: &'static ResourceType,
    /// The object before (for selector transitions).
    pub old: Option<Value>,
    /// The object after (for a delete: as deleted, with the delete's rv).
    pub new: Value,
}

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None` for all namespaces.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let ns_ok = match &self.namespace {
            Some(ns) => {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns.as_str())
            }
            None => true,
        };
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// (group, plural, namespace, name): every version of a type shares storage.
type Key = (&'static str, &'static str, String, String);

struct Page {
    rv: u64,
    /// (group, plural) the token was issued for: a token is only valid for
    /// the list that issued it.
    storage: (&'static str, &'static str),
    /// Issue order, for evicting the oldest token first.
    issued: u64,
    rest: Vec<Value>,
}

/// The state behind the lock.
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches from an rv below this get 410: their events are gone.
    compacted: u64,
    pages: HashMap<String, Page>,
    /// Makes every continue token unique, even for lists of different types
    /// at the same rv with the same page size.
    page_counter: u64,
    tx: broadcast::Sender<Arc<Event>>,
    seed: u64,
    /// Served types: the built-ins, then those CRDs define.
    types: Vec<&'static ResourceType>,
}

fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> Key {
    let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
    (rt.group, rt.plural, ns.to_owned(), name.to_owned())
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

impl Store {
    /// An empty store with the default namespaces. The rv starts at the unix
    /// time in microseconds, so rvs from an earlier server are older.
    pub fn new(history_limit: usize) -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let (tx, _) = broadcast::channel(4096);
        let mut store = Store {
            rv: start,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: start,
            pages: HashMap::new(),
            page_counter: 0,
            tx,
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            types: BUILTIN.iter().collect(),
        };
        let ns = &BUILTIN[0];
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let _ = store.create(ns, None, body);
        }
        store
    }

    /// Finds a served type.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        self.types
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Every served type, built-ins first.
    pub fn types(&self) -> &[&'static ResourceType] {
        &self.types
    }

    /// Registers (or re-registers) the types a CRD defines, and fills in the
    /// status the API server gives an accepted CRD.
    fn establish(&mut self, crd: &mut Value) {
        let new = from_crd(crd);
        if let Some(first) = new.first() {
            self.types.retain(|t| t.builtin || !t.same_storage(first));
            self.types.extend(new.iter().copied());
        }
        let now = now_rfc3339();
        let versions: Vec<Value> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"].as_bool().unwrap_or(false))
            .map(|v| v["name"].clone())
            .collect();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": versions,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
    }

    /// The current rv.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    fn random(&mut self, salt: u64) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.seed);
        h.write_u64(salt);
        h.write_u64(self.rv);
        h.finish()
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(1), self.random(2));
        let hex = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn commit(
        &mut self,
        kind: EventType,
        rt: &'static ResourceType,
        old: Option<Value>,
        new: Value,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            rt,
            old,
            new,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(event);
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("", "namespaces", String::new(), ns.to_owned()))
    }

    /// Gets one object.
    pub fn get(
        &self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.qualified(), name))
    }

    /// Lists, with paging: `limit` items per page, later pages from the same
    /// snapshot through an opaque `continue` token.
    pub fn list(
        &mut self,
        rt: &'static ResourceType,
        filter: &Filter,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<(Vec<Value>, u64, Option<String>), ApiError> {
        let (rv, mut items) = match cont {
            Some(token) => {
                let page = self
                    .pages
                    .remove(token)
                    .ok_or_else(|| ApiError::expired("the provided continue parameter is too old to display a consistent list result"))?;
                if page.storage != (rt.group, rt.plural) {
                    return Err(ApiError::bad_request(
                        "the continue token was issued for a different resource",
                    ));
                }
                (page.rv, page.rest)
            }
            None => (self.rv, self.current(rt, filter)),
        };
        let token = match limit {
            Some(l) if l > 0 && items.len() > l => {
                let rest = items.split_off(l);
                self.page_counter += 1;
                let issued = self.page_counter;
                let token = format!("{:016x}{issued:x}", self.random(issued));
                if self.pages.len() >= 64 {
                    // Bounded memory: the oldest token expires first.
                    let oldest = self
                        .pages
                        .iter()
                        .min_by_key(|(_, p)| p.issued)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.pages.remove(&k);
                    }
                }
                self.pages.insert(
                    token.clone(),
                    Page {
                        rv,
                        storage: (rt.group, rt.plural),
                        issued,
                        rest,
                    },
                );
                Some(token)
            }
            _ => None,
        };
        Ok((items, rv, token))
    }

    /// Remaining items behind a continue token, for `remainingItemCount`.
    pub fn remaining(&self, token: &str) -> usize {
        self.pages.get(token).map_or(0, |p| p.rest.len())
    }

    /// Creates an object.
    pub fn create(
        &mut self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        let meta = metadata_mut(&mut body)?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let r = self.random(3);
                    let suffix: String = (0..5)
                        .map(|i| {
                            b"bcdfghjklmnpqrstvwxz2456789"[((r >> (i * 5)) % 27) as usize] as char
                        })
                        .collect();
                    format!("{prefix}{suffix}")
                }
                _ => {
                    return Err(ApiError::invalid(
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(&name)?;
        if rt.namespaced {
            let ns = ns.ok_or_else(|| {
                ApiError::bad_request("a namespace is required for this resource")
            })?;
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::not_found("namespaces", ns));
            }
        }
        let key = key(rt, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.qualified(), &name));
        }
        let uid = self.uid();
        self.rv += 1;
        let meta = metadata_mut(&mut body)?;
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(key.2));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        if rt.generation != Generation::None {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("body must be an object"))?;
        obj.insert("apiVersion".into(), json!(rt.api_version()));
        obj.insert("kind".into(), json!(rt.kind));
        if rt.status {
            obj.remove("status");
        }
        default(rt, &mut body)?;
        (rt.validate)(&body).map_err(ApiError::bad_request)?;
        if rt.builtin && rt.kind == "CustomResourceDefinition" {
            self.establish(&mut body);
        }
        self.objects.insert(key, body.clone());
        self.commit(EventType::Added, rt, None, body.clone());
        Ok(body)
    }

    /// Replaces an object (PUT), or only its status when `status` is set.
    pub fn replace(
        &mut self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let key = key(rt, ns, name);
        let old = self.get(rt, ns, name)?;
        let sent_rv = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if !rt.builtin && !status && sent_rv.is_none() {
            return Err(ApiError::invalid(
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        if let Some(sent) = sent_rv
            && Some(sent)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&rt.qualified(), name));
        }
        let mut new = if status {
            // The status subresource takes only .status.
            let mut merged = old.clone();
            match body.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            merged
        } else {
            if rt.status {
                match old.get("status") {
                    Some(s) => body["status"] = s.clone(),
                    None => {
                        if let Some(o) = body.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            // Server-owned fields stay as stored.
            let meta = metadata_mut(&mut body)?;
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old.pointer(&format!("/metadata/{field}")) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            let obj = body
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("body must be an object"))?;
            obj.insert("apiVersion".into(), json!(rt.api_version()));
            obj.insert("kind".into(), json!(rt.kind));
            body
        };
        default(rt, &mut new)?;
        // Compare without the rv: a no-op write keeps the rv and sends nothing.
        if let Some(m) = new.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.insert(
                "resourceVersion".into(),
                old["metadata"]["resourceVersion"].clone(),
            );
        }
        if new == old {
            return Ok(old);
        }
        if !status && bumps_generation(rt, &old, &new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            new["metadata"]["generation"] = json!(g);
        }
        (rt.validate)(&new).map_err(ApiError::bad_request)?;
        if rt.builtin && rt.kind == "CustomResourceDefinition" && !status {
            self.establish(&mut new);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let finalizing = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalizing {
            self.objects.remove(&key);
            self.commit(EventType::Deleted, rt, Some(old), new.clone());
        } else {
            self.objects.insert(key, new.clone());
            self.commit(EventType::Modified, rt, Some(old), new.clone());
        }
        Ok(new)
    }

    /// Deletes an object, honoring preconditions and finalizers.
    pub fn delete(
        &mut self,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let key = key(rt, ns, name);
        let old = self.get(rt, ns, name)?;
        for (pre, field) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
            if let Some(want) = options
                .pointer(&format!("/preconditions/{pre}"))
                .and_then(Value::as_str)
                && Some(want)
                    != old
                        .pointer(&format!("/metadata/{field}"))
                        .and_then(Value::as_str)
            {
                return Err(ApiError::conflict(&rt.qualified(), name));
            }
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.rv += 1;
            new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key, new.clone());
            self.commit(EventType::Modified, rt, Some(old), new.clone());
            return Ok(new);
        }
        let contents: Vec<Key> = match (rt.group, rt.plural) {
            // A namespace takes its contents with it.
            ("", "namespaces") => self
                .objects
                .keys()
                .filter(|(_, _, n, _)| n == name)
                .cloned()
                .collect(),
            // A CRD takes its custom resources with it.
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let group = old
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let plural = old
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.objects
                    .keys()
                    .filter(|(g, p, _, _)| *g == group && *p == plural)
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        for k in contents {
            let Some(owner) = self
                .types
                .iter()
                .copied()
                .find(|t| t.group == k.0 && t.plural == k.1)
            else {
                continue;
            };
            if let Some(obj) = self.objects.remove(&k) {
                self.rv += 1;
                let mut gone = obj.clone();
                gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.commit(EventType::Deleted, owner, Some(obj), gone);
            }
        }
        if rt.kind == "CustomResourceDefinition" {
            let group = old
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let plural = old
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            self.types
                .retain(|t| t.builtin || !(t.group == group && t.plural == plural));
        }
        self.objects.remove(&key);
        self.rv += 1;
        let mut gone = old.clone();
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.commit(EventType::Deleted, rt, Some(old), gone.clone());
        Ok(gone)
    }

    /// Subscribes a watch from `from` (exclusive). Returns the events to
    /// replay and the live receiver, or `Err(rv)` when `from` is older than
    /// the history (the caller sends 410).
    #[allow(clippy::type_complexity)]
    pub fn subscribe(
        &self,
        from: Option<u64>,
    ) -> Result<(Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>, u64), u64> {
        let rx = self.tx.subscribe();
        match from {
            None => Ok((Vec::new(), rx, self.rv)),
            Some(n) if n < self.compacted => Err(n),
            Some(n) => Ok((
                self.history.iter().filter(|e| e.rv > n).cloned().collect(),
                rx,
                self.rv,
            )),
        }
    }

    /// The current objects of a type matching `filter` (initial events).
    pub fn current(&self, rt: &'static ResourceType, filter: &Filter) -> Vec<Value> {
        let start = (rt.group, rt.plural, String::new(), String::new());
        self.objects
            .range(start..)
            .take_while(|((g, p, _, _), _)| *g == rt.group && *p == rt.plural)
            .map(|(_, v)| v)
            .filter(|v| filter.matches(v))
            .cloned()
            .collect()
    }

    /// Test hook: forget all history and bump the rv, so every watch that
    /// resumes from an earlier rv gets 410; expires every continue token.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
        self.pages.clear();
    }
}

fn metadata_mut(body: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        )))
    }
}

fn bumps_generation(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    match rt.generation {
        Generation::None => false,
        Generation::Spec => old.get("spec") != new.get("spec"),
        Generation::NonMetadata | Generation::NonMetadataStatus => {
            let with_status = rt.generation == Generation::NonMetadata;
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("metadata");
                    if !with_status {
                        o.remove("status");
                    }
                }
                v
            };
            strip(old) != strip(new)
        }
    }
}

/// The light defaulting the API server does and clients rely on.
fn default(rt: &ResourceType, body: &mut Value) -> Result<(), ApiError> {
    match rt.kind {
        "Secret" => {
            if let Some(string_data) = body.as_object_mut().and_then(|o| o.remove("stringData")) {
                let map = string_data.as_object().cloned().unwrap_or_default();
                let data = body
                    .as_object_mut()
                    .map(|o| o.entry("data").or_insert_with(|| json!({})));
                if let Some(Value::Object(data)) = data {
                    for (k, v) in map {
                        let text = v.as_str().unwrap_or_default();
                        data.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
            if let Some(Value::Object(data)) = body.get("data") {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| {
                        base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                    });
                    if !ok {
                        return Err(ApiError::bad_request(format!(
                            "data[{k}]: illegal base64 data"
                        )));
                    }
                }
            }
            if body.get("type").is_none() {
                body["type"] = json!("Opaque");
            }
        }
        "Namespace" if body.pointer("/status/phase").is_none() => {
            body["status"] = json!({"phase": "Active"});
        }
        "Service" => {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("type").or_insert_with(|| json!("ClusterIP"));
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert_with(|| json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
            }
        }
        "EndpointSlice" => {
            if let Some(Value::Array(ports)) = body.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}
