//! Field validation the API server would do, repeated here because the file
//! provider has no API server and because a controller must never trust that
//! admission ran.

/// Checks a rule host: a lower-case DNS-1123 subdomain, or `*.` followed by
/// one. Returns the normalized host.
pub(crate) fn validate_host(host: &str) -> Result<String, String> {
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.len() > 253 || name.is_empty() {
        return Err(format!("host {host:?} must be 1-253 characters"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host {host:?} is not a lower-case DNS name (RFC 1123 labels of a-z, 0-9 and '-'){}",
                if host.contains('*') && !wild {
                    "; a wildcard is only allowed as the whole first label, as in *.example.com"
                } else {
                    ""
                }
            ));
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "host {host:?} must be a DNS name, not an IP address"
        ));
    }
    Ok(host.to_owned())
}

/// Checks an Exact or Prefix path as the Ingress API validation does: absolute,
/// no `//`, no dot segments, no encoded slash.
pub(crate) fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must begin with '/'"));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(format!("path {path:?} must not contain {bad:?}"));
        }
    }
    if path.ends_with("/..") || path.ends_with("/.") {
        return Err(format!("path {path:?} must not end with a dot segment"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '\\'))
    {
        return Err(format!("path {path:?} must not contain {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(validate_host("shop.example.com").is_ok());
        assert!(validate_host("*.example.com").is_ok());
        assert!(validate_host("a").is_ok());
        for bad in [
            "Shop.example.com",
            "*",
            "*.",
            "a.*.com",
            "foo*.example.com",
            "-a.com",
            "a..b",
            "10.0.0.1",
            "exa mple.com",
            "example.com:80",
        ] {
            assert!(validate_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths() {
        assert!(validate_path("/").is_ok());
        assert!(validate_path("/foo/bar").is_ok());
        for bad in [
            "foo", "//a", "/a/../b", "/a/./b", "/a/..", "/a%2Fb", "/a?b", "/a b",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
