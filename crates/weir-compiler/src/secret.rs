//! Reading Secrets the way every consumer in the compiler needs them: a
//! value from `data`, or from `stringData` as a manifest file writes it, and
//! a fingerprint that names key material in snapshots and logs without
//! printing it.

use k8s_openapi::api::core::v1::Secret;

/// The value of `key`: `data` first (what the API server stores), else
/// `stringData` (what a manifest file holds before the API server folds it).
pub(crate) fn value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.0.clone());
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes().to_vec())
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex SHA-256 over `parts` in order: equal material, equal fingerprint.
pub(crate) fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        digest.update(part);
    }
    hex(digest.finish().as_ref())
}
