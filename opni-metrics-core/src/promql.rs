//! Small pieces of PromQL and Prometheus naming: string literals and label names.

/// `s` as a PromQL string literal (double-quoted, `"`, `\` and newlines escaped), for building
/// selectors from values a caller gave.
///
/// ```
/// assert_eq!(opni_metrics_core::promql::string_literal(r#"a"b"#), r#""a\"b""#);
/// ```
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `n` is a Prometheus label name in the classic alphabet: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names() {
        assert_eq!(string_literal("a\\b\nc"), r#""a\\b\nc""#);
        assert!(is_label_name("__name__") && is_label_name("job_1"));
        assert!(!is_label_name("") && !is_label_name("1a") && !is_label_name("a-b"));
    }
}
