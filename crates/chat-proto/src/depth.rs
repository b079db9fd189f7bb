//! Nesting limits for untrusted JSON and MessagePack: a cheap scan that refuses deeply nested
//! input before a parser builds (and later recursively drops) a deep tree.

/// The default deepest nesting accepted in a client frame or REST body. Real frames and bodies
/// are two or three levels deep.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether JSON text nests arrays/objects deeper than `max`. One pass, no allocation; brackets
/// inside strings (with escapes) do not count. Input that is not JSON is left to the parser.
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The nesting depth of a decoded value (a scalar is 0), computed without recursion.
pub fn value_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            serde_json::Value::Object(map) => {
                deepest = deepest.max(depth + 1);
                stack.extend(map.values().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_brackets_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(json_depth_exceeds(deep.as_bytes(), 32));
        assert!(!json_depth_exceeds(deep.as_bytes(), 100));
    }

    #[test]
    fn value_depth_matches() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":[1,{"b":[]}]}"#).expect("json");
        assert_eq!(value_depth(&v), 4);
        assert_eq!(value_depth(&serde_json::json!(1)), 0);
    }
}
