//! Go-style durations (`500ms`, `15s`, `1m30s`), the notation Kubernetes users
//! already write in annotations and CRDs.

/// Parses `[0-9]+(ms|s|m|h)` repeated, e.g. `1m30s`, into milliseconds.
/// Rejects empty input, signs, fractions and unknown units, and anything
/// above one day, which no proxy timeout needs.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const MAX_MS: u64 = 24 * 3600 * 1000;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "{text:?} is not a duration like 500ms, 15s or 1m30s"
            ));
        }
        let n: u64 = text[start..i]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let scale = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => {
                return Err(format!(
                    "{text:?} has a number without a unit (ms, s, m, h)"
                ));
            }
            u => {
                return Err(format!(
                    "{text:?} has unknown unit {u:?} (use ms, s, m or h)"
                ));
            }
        };
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
    }
    if total > MAX_MS {
        return Err(format!("{text:?} is longer than 24h"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn parses_go_style() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("15s"), Ok(15_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "10",
            "-1s",
            "1.5s",
            "10x",
            "25h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
