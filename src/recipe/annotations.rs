//! OCI annotations as archfarm.yaml gives them (`annotations:`, and per image
//! `images.<name>.annotations:`), and what one image's manifests and canonical index
//! carry (docs/supply-chain.md, "Annotations and time").
//!
//! A value is a string, written on the image's per-platform manifests and on its
//! index, or `{env: VARIABLE}`, read when the command starts and written on the index
//! only: a value that changes from run to run (a commit, a version) would otherwise be
//! in every per-platform content key and rebuild every image each time it changes.
//! An unset or empty variable leaves the annotation out. A per-image entry replaces the
//! global entry of the same key, whatever either says. `org.opencontainers.image.created`
//! is never written by hand: it is `SOURCE_DATE_EPOCH`, on manifests and index alike.

use std::collections::BTreeMap;

use crate::support::time::rfc3339;

/// The annotation `SOURCE_DATE_EPOCH` sets.
pub const CREATED: &str = "org.opencontainers.image.created";

/// The keys the OCI image specification defines (annotations.md, "Pre-Defined
/// Annotation Keys"); the rest of `org.opencontainers.` is reserved for it.
const OCI_KEYS: [&str; 14] = [
    "created",
    "authors",
    "url",
    "documentation",
    "source",
    "version",
    "revision",
    "vendor",
    "licenses",
    "ref.name",
    "title",
    "description",
    "base.digest",
    "base.name",
];

/// One value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string: on the manifests and the index.
    Text(String),
    /// `{env: VARIABLE}`: on the index only; `value` is what the variable held when the
    /// configuration was read (`None`: unset or empty, so the annotation is left out).
    Env { variable: String, value: Option<String> },
}

/// The annotations of one scope (global, or one image) by key.
pub type Annotations = BTreeMap<String, Value>;

/// What one image carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageAnnotations {
    /// On each per-platform manifest (and so in each per-platform key).
    pub manifest: BTreeMap<String, String>,
    /// On the canonical index (and so in the index key): the manifest's, and those
    /// read from the environment.
    pub index: BTreeMap<String, String>,
}

/// Why `key` cannot be an annotation key, if it cannot. The specification asks for
/// reverse domain notation and reserves `org.opencontainers.`; archfarm's own labels
/// are under `dev.archfarm.`.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    let shape = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && key.contains('.')
        && key.split('.').all(|part| !part.is_empty());
    if !shape {
        return Err(format!(
            "'{}' is not an annotation key: use reverse domain notation, letters, digits, `.`, `-` and `_` \
             (e.g. org.opencontainers.image.source or com.example.team)",
            key.escape_debug()
        ));
    }
    if key == CREATED {
        return Err(format!("{CREATED} is set from SOURCE_DATE_EPOCH (whole seconds); set that instead"));
    }
    if let Some(rest) = key.strip_prefix("org.opencontainers.") {
        if !rest.strip_prefix("image.").is_some_and(|k| OCI_KEYS.contains(&k)) {
            return Err(format!(
                "'{key}' is not defined by the OCI image specification, which reserves org.opencontainers.; the \
                 defined keys are org.opencontainers.image.{}",
                OCI_KEYS[1..].join(", org.opencontainers.image.")
            ));
        }
    }
    if key.starts_with("dev.archfarm.") {
        return Err(format!("'{key}': dev.archfarm. is archfarm's own; use a prefix of yours"));
    }
    Ok(())
}

/// Reads one scope as archfarm.yaml wrote it: each key checked, each value a non-empty
/// string or `{env: VARIABLE}` (read now, through `env`). An error is (the entry's key,
/// why) for the caller to name its field.
pub fn parse(
    raw: &BTreeMap<String, serde_yaml_ng::Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Annotations, (String, String)> {
    let mut out = Annotations::new();
    for (key, value) in raw {
        check_key(key).map_err(|e| (key.clone(), e))?;
        let bad = |why: &str| (key.clone(), why.to_string());
        let value = match value {
            serde_yaml_ng::Value::String(s) if s.is_empty() => {
                return Err(bad("an empty value says nothing; remove the entry"))
            }
            serde_yaml_ng::Value::String(s) => Value::Text(s.clone()),
            serde_yaml_ng::Value::Number(_) | serde_yaml_ng::Value::Bool(_) => {
                return Err(bad("YAML reads this as a number or a boolean, not text; quote it (\"1.0\")"))
            }
            serde_yaml_ng::Value::Mapping(m) => {
                let variable = match (m.len(), m.get("env")) {
                    (1, Some(serde_yaml_ng::Value::String(v))) => v.clone(),
                    _ => return Err(bad("expected text or {env: VARIABLE}")),
                };
                let valid = variable.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(bad(&format!("'{}' is not an environment variable name", variable.escape_debug())));
                }
                let value = env(&variable).filter(|v| !v.is_empty());
                Value::Env { variable, value }
            }
            _ => return Err(bad("expected text or {env: VARIABLE}")),
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// What an image carries: `image`'s entries over `global`'s, key by key, and `created`
/// from `epoch` (`SOURCE_DATE_EPOCH`).
pub fn for_image(global: &Annotations, image: &Annotations, epoch: Option<u64>) -> ImageAnnotations {
    let mut merged = global.clone();
    merged.extend(image.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut out = ImageAnnotations::default();
    for (key, value) in merged {
        match value {
            Value::Text(text) => {
                out.manifest.insert(key.clone(), text.clone());
                out.index.insert(key, text);
            }
            Value::Env { value: Some(v), .. } => {
                out.index.insert(key, v);
            }
            Value::Env { value: None, .. } => {}
        }
    }
    if let Some(epoch) = epoch {
        out.manifest.insert(CREATED.to_string(), rfc3339(epoch));
        out.index.insert(CREATED.to_string(), rfc3339(epoch));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> BTreeMap<String, serde_yaml_ng::Value> {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "SHA" => Some("0123abc".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn keys_are_reverse_domain_names_and_oci_keys_are_the_specifications() {
        for ok in [
            "org.opencontainers.image.source",
            "org.opencontainers.image.base.digest",
            "com.example.team-name",
            "io.artifacthub.package.readme-url",
            "a.b_c",
        ] {
            assert_eq!(check_key(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("source", "reverse domain"),
            ("", "reverse domain"),
            ("com..example", "reverse domain"),
            (".com.example", "reverse domain"),
            ("com.example.", "reverse domain"),
            ("com.exa mple", "reverse domain"),
            ("com.example/x", "reverse domain"),
            ("org.opencontainers.image.created", "SOURCE_DATE_EPOCH"),
            ("org.opencontainers.image.sources", "not defined by the OCI"),
            ("org.opencontainers.artifact.created", "not defined by the OCI"),
            ("dev.archfarm.key", "archfarm's own"),
        ] {
            let e = check_key(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn values_are_text_or_a_variable() {
        let a = parse(
            &yaml("org.opencontainers.image.source: https://example.com/x\norg.opencontainers.image.revision: {env: SHA}\ncom.example.unset: {env: NOT_SET}\ncom.example.empty: {env: EMPTY}\n"),
            &env,
        )
        .unwrap();
        assert_eq!(a["org.opencontainers.image.source"], Value::Text("https://example.com/x".into()));
        assert_eq!(
            a["org.opencontainers.image.revision"],
            Value::Env { variable: "SHA".into(), value: Some("0123abc".into()) }
        );
        assert_eq!(a["com.example.unset"], Value::Env { variable: "NOT_SET".into(), value: None });
        assert_eq!(a["com.example.empty"], Value::Env { variable: "EMPTY".into(), value: None }, "empty is unset");
        for (text, says) in [
            ("com.example.v: 1.0\n", "quote it"),
            ("com.example.v: true\n", "quote it"),
            ("com.example.v: ''\n", "empty value"),
            ("com.example.v: [a]\n", "text or {env: VARIABLE}"),
            ("com.example.v: {file: x}\n", "text or {env: VARIABLE}"),
            ("com.example.v: {env: A, file: x}\n", "text or {env: VARIABLE}"),
            ("com.example.v: {env: 1A}\n", "not an environment variable name"),
            ("source: x\n", "reverse domain"),
        ] {
            let (key, why) = parse(&yaml(text), &env).unwrap_err();
            assert!(text.starts_with(&key) && why.contains(says), "{text}: {key}: {why}");
        }
    }

    #[test]
    fn an_image_carries_text_everywhere_variables_on_its_index_and_created_from_the_epoch() {
        let global = parse(
            &yaml("com.example.team: infra\norg.opencontainers.image.revision: {env: SHA}\norg.opencontainers.image.licenses: MIT\n"),
            &env,
        )
        .unwrap();
        let image =
            parse(&yaml("org.opencontainers.image.licenses: {env: NOT_SET}\ncom.example.only: web\n"), &env).unwrap();
        let a = for_image(&global, &image, None);
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(a.manifest, map(&[("com.example.only", "web"), ("com.example.team", "infra")]));
        assert_eq!(
            a.index,
            map(&[
                ("com.example.only", "web"),
                ("com.example.team", "infra"),
                ("org.opencontainers.image.revision", "0123abc")
            ]),
            "the image's unset variable replaces the global licenses"
        );
        assert_eq!(for_image(&Annotations::new(), &Annotations::new(), None), ImageAnnotations::default());
        let t = for_image(&Annotations::new(), &Annotations::new(), Some(1_700_000_000));
        assert_eq!(t.manifest, map(&[(CREATED, "2023-11-14T22:13:20Z")]));
        assert_eq!(t.index, t.manifest);
    }
}
