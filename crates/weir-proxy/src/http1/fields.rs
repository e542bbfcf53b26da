//! An upstream response's fields as they arrived, passed on as they are.
//!
//! Most of what an upstream sends in its head (`Content-Type`, `Date`,
//! `Cache-Control`, `Set-Cookie`, ...) weir only carries through to the
//! client. Turning each field into the `http` types costs a name lookup, a
//! second check of every value byte (httparse has checked them already)
//! and a hash insert, and writing the map out again an iteration: more
//! than parsing the head itself. So an HTTP/1.1 upstream's fields stay in
//! the head's bytes, recorded by where each name and value sits, and the
//! HTTP/1 server writes them from there (normalized to `name: value` and
//! CRLF). They become header-map entries only for an HTTP/2 client
//! ([`RawFields::append_to`]). Hop-by-hop fields, and the fields
//! `Connection` names, never get in.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::headers::Known;

/// A response's fields, in the order they came.
#[derive(Debug, Default)]
pub(crate) struct RawFields {
    /// The head they are in.
    head: Bytes,
    spans: Vec<Span>,
}

/// Where one field's name and value sit in the head.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
    known: Known,
}

impl RawFields {
    /// Fields to come from `head`; room for `n` of them.
    pub(crate) fn new(head: Bytes, n: usize) -> Self {
        RawFields {
            head,
            spans: Vec::with_capacity(n),
        }
    }

    /// The same fields, in `head` (recorded before the head was split off
    /// the buffer the parser read, at the same offsets).
    pub(crate) fn with_head(mut self, head: Bytes) -> Self {
        self.head = head;
        self
    }

    /// Adds the field whose name and value are at these offsets in the
    /// head (already checked by the parser).
    pub(crate) fn push(&mut self, name: (usize, usize), value: (usize, usize), known: Known) {
        // Heads are at most 64 KiB (client.rs), so offsets fit.
        let at = |(start, len): (usize, usize)| (start as u32, len as u32);
        self.spans.push(Span {
            name: at(name),
            value: at(value),
            known,
        });
    }

    /// Keeps only the fields whose name `keep` accepts; `head` is the
    /// bytes the offsets point into.
    pub(crate) fn retain(&mut self, head: &[u8], mut keep: impl FnMut(&[u8]) -> bool) {
        self.spans.retain(|s| keep(&head[range(s.name)]));
    }

    /// Each field: its name as sent, its value, and what weir makes of it.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], Known)> {
        self.spans.iter().map(|s| {
            (
                &self.head[range(s.name)],
                &self.head[range(s.value)],
                s.known,
            )
        })
    }

    /// Whether a field of this kind is among them.
    pub(crate) fn has(&self, known: Known) -> bool {
        self.spans.iter().any(|s| s.known == known)
    }

    /// Moves the fields into `headers`, after what it holds, for a
    /// consumer that needs a header map. The parser has checked every name
    /// and value by the same rules as the `http` types, so none is dropped
    /// in practice.
    pub(crate) fn append_to(self, headers: &mut HeaderMap) {
        headers.reserve(self.spans.len());
        for s in &self.spans {
            let name = &self.head[range(s.name)];
            let value = self.head.slice(range(s.value));
            match (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => tracing::debug!(
                    name = %String::from_utf8_lossy(name),
                    "Upstream response field the parser passed but the http types refuse; dropped."
                ),
            }
        }
    }
}

/// The bytes of a name or value in the head.
fn range((start, len): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..(start + len) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> RawFields {
        let head = Bytes::from_static(b"Server: nginx\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n");
        let mut f = RawFields::new(head, 3);
        f.push((0, 6), (8, 5), Known::Other);
        f.push((15, 10), (27, 3), Known::Other);
        f.push((32, 10), (44, 3), Known::Other);
        f
    }

    #[test]
    fn fields_keep_their_order_and_spelling_and_become_a_map_on_demand() {
        let f = fields();
        let seen: Vec<_> = f
            .iter()
            .map(|(n, v, _)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        assert_eq!(seen, ["Server=nginx", "Set-Cookie=a=1", "set-cookie=b=2"]);
        let mut map = HeaderMap::new();
        map.insert("x-added", HeaderValue::from_static("1"));
        f.append_to(&mut map);
        assert_eq!(map["server"], "nginx");
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(map.len(), 4);

        let mut f = fields();
        let head = f.head.clone();
        f.retain(&head, |name| !name.eq_ignore_ascii_case(b"set-cookie"));
        assert_eq!(f.iter().count(), 1);
    }
}
