//! The `Allow` header of a 405: which methods the path does take.
//!
//! RFC 9110 requires it on every 405. warp's `MethodNotAllowed` rejection
//! does not say which methods would have matched, so the answer comes from
//! the OpenAPI document, which `tests/openapi.rs` proves equal to what the
//! server routes: one list of routes, not a second one to keep in step.

use std::sync::OnceLock;

use serde_json::Value;

/// A documented path template split into segments, and its methods.
struct Route {
    segments: Vec<Segment>,
    methods: Vec<String>,
}

enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param,
}

impl Route {
    fn matches(&self, path: &[&str]) -> bool {
        self.segments.len() == path.len()
            && self.segments.iter().zip(path).all(|(s, p)| match s {
                Segment::Literal(l) => l == p,
                Segment::Param => !p.is_empty(),
            })
    }

    fn params(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Param))
            .count()
    }
}

fn table() -> &'static [Route] {
    static TABLE: OnceLock<Vec<Route>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let doc: Value = serde_json::from_str(super::openapi::document()).unwrap_or_default();
        let Some(paths) = doc["paths"].as_object() else {
            return Vec::new();
        };
        paths
            .iter()
            .map(|(template, item)| Route {
                segments: split(template)
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Segment::Param
                        } else {
                            Segment::Literal(s.to_owned())
                        }
                    })
                    .collect(),
                methods: item
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    })
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.trim_start_matches('/').split('/')
}

/// The methods `path` takes, for its `Allow` header: those of the most
/// specific documented template it matches (a literal segment beats a
/// parameter, so `/api/v1/licenses/acquire` is not `/api/v1/licenses/{id}`),
/// or `None` when it matches none.
pub fn allowed(path: &str) -> Option<String> {
    let segments: Vec<&str> = split(path).collect();
    let route = table()
        .iter()
        .filter(|r| r.matches(&segments))
        .min_by_key(|r| r.params())?;
    Some(route.methods.join(", "))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn a_path_is_answered_with_the_methods_of_its_most_specific_route() {
        assert_eq!(allowed("/api/v1/auth/login").as_deref(), Some("POST"));
        assert_eq!(allowed("/api/v1/licenses/acquire").as_deref(), Some("POST"));
        let heartbeat = allowed("/api/v1/licenses/sessions/abc/heartbeat").unwrap();
        assert!(heartbeat.contains("POST") && heartbeat.contains("PATCH"));
        assert_eq!(allowed("/api/v1/nothing/here"), None);
        assert_eq!(allowed("/api/v1/auth/login/extra"), None);
    }
}
