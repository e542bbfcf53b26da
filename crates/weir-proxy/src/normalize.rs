//! Request-path normalization, done once per request before routing.
//!
//! A proxy that routes one spelling of a path and forwards another is a
//! policy bypass (`/api/users/..%2fadmin`, `/public/..;/admin`). weir
//! computes one canonical path, routes on it, and forwards exactly it:
//! - percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded (`%2e` -> `.`), so encoded dot segments are seen as dot segments;
//!   every other escape is kept, with upper-case hex (`%2f` -> `%2F`): an
//!   encoded slash stays data and never becomes a separator;
//! - dot segments are removed (RFC 3986 §5.2.4), never above the root;
//! - runs of slashes are merged, as nginx does by default;
//! - what cannot be normalized safely is refused: a malformed escape, an
//!   encoded NUL, a backslash (raw or `%5C`, a separator on some servers), and
//!   a dot segment with a `;` parameter (`..;`), which Java servers treat as
//!   `..`.

use std::borrow::Cow;

/// Why a path was refused. Each maps to a 400 with its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (`*`, empty, or not starting with `/`).
    #[error("request target must be an absolute path")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    BadEscape,
    /// `%00`.
    #[error("encoded NUL in path")]
    EncodedNul,
    /// `\` or `%5C`.
    #[error("backslash in path")]
    Backslash,
    /// `..;x` or `.;x`: a dot segment hidden behind a path parameter.
    #[error("dot segment with a path parameter")]
    DotSegmentParameter,
}

impl PathError {
    /// Stable error code for the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "invalid_path",
            PathError::BadEscape => "invalid_path_encoding",
            PathError::EncodedNul => "invalid_path_nul",
            PathError::Backslash => "invalid_path_backslash",
            PathError::DotSegmentParameter => "invalid_path_dot_segment",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is already canonical: the common case, checked without
/// allocating.
fn is_canonical(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' if prev == b'/' => return false,
            // A segment that is exactly "." or "..".
            b'.' if prev == b'/' => {
                let rest = &path[i + 1..];
                let seg_end = rest.iter().position(|c| *c == b'/').unwrap_or(rest.len());
                if seg_end == 0 || (seg_end == 1 && rest[0] == b'.') {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Returns the canonical form of an origin-form path (no query).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes) {
        return Ok(Cow::Borrowed(path));
    }

    // 1. Percent-decoding of unreserved characters only.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    0 => return Err(PathError::EncodedNul),
                    b'\\' => return Err(PathError::Backslash),
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.push('%');
                        decoded.push(HEX[usize::from(v >> 4)] as char);
                        decoded.push(HEX[usize::from(v & 15)] as char);
                    }
                }
                i += 3;
            }
            _ => {
                // Multi-byte UTF-8 is copied through untouched.
                let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
                decoded.push_str(&path[i..i + ch_len]);
                i += ch_len;
            }
        }
    }

    // 2. Dot segments and empty segments.
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for segment in decoded.split('/') {
        let bare = segment.split(';').next().unwrap_or("");
        match segment {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            _ if (bare == "." || bare == "..") => return Err(PathError::DotSegmentParameter),
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    if decoded.ends_with('/') {
        trailing_slash = true;
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || trailing_slash {
        result.push('/');
    }
    Ok(Cow::Owned(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/c.d", "/.well-known/x", "/a/..b"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/api/users/../admin").unwrap(), "/api/admin");
        assert_eq!(n("/api/users/%2e%2e/admin").unwrap(), "/api/admin");
        assert_eq!(n("/api/users/%2E%2E/admin").unwrap(), "/api/admin");
        assert_eq!(n("/api/./users").unwrap(), "/api/users");
        assert_eq!(n("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("/a/..b").unwrap(), "/a/..b");
    }

    #[test]
    fn encoded_slash_stays_data() {
        assert_eq!(n("/api/users/..%2fadmin").unwrap(), "/api/users/..%2Fadmin");
        assert_eq!(n("/a%2Fb").unwrap(), "/a%2Fb");
        assert_eq!(n("/a%2f..%2fb").unwrap(), "/a%2F..%2Fb");
    }

    #[test]
    fn unreserved_decoded_others_kept() {
        assert_eq!(n("/%61%62c").unwrap(), "/abc");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn slashes_merged() {
        assert_eq!(n("//admin").unwrap(), "/admin");
        assert_eq!(n("/a//b///c/").unwrap(), "/a/b/c/");
    }

    #[test]
    fn refused() {
        assert_eq!(n("/a/%00"), Err(PathError::EncodedNul));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%5Cb"), Err(PathError::Backslash));
        assert_eq!(n("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(n("/public/..;/admin"), Err(PathError::DotSegmentParameter));
        assert_eq!(n("/public/.;x/admin"), Err(PathError::DotSegmentParameter));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%4"), Err(PathError::BadEscape));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
        assert_eq!(n(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn semicolons_in_ordinary_segments_are_data() {
        assert_eq!(n("/a;jsessionid=1/b").unwrap(), "/a;jsessionid=1/b");
    }

    #[test]
    fn idempotent() {
        for p in [
            "/a/../b",
            "/%2e/x",
            "/a%2fb/./c//d/",
            "/x/%7euser",
            "/a;b/c",
        ] {
            let once = n(p).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{p}");
        }
    }
}
