//! Just enough of the Dockerfile grammar to know what a recipe needs from the farm: the
//! images it builds FROM (and on which platform), the secrets it mounts, whether it
//! needs BuildKit, and its stages; and to rewrite those image references.
//!
//! Handled: parser directives (`# escape=` changes the continuation character), comments,
//! line continuations, case-insensitive instructions, `FROM [--platform=...] image [AS
//! name]`, `ARG` before the first `FROM` (defaults, overridden by build args) with `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}` and `${VAR+alt}`
//! substitution, BuildKit's automatic platform args (`TARGETARCH`, `BUILDPLATFORM`...)
//! in FROM lines, `RUN --mount=type=secret,id=...` and the other RUN flags only BuildKit
//! knows, and `COPY --from=<image>` (an external image, unlike `--from=<stage>` or
//! `--from=<index>`). `scratch` and references to earlier stages are not images.

use std::collections::{BTreeMap, BTreeSet};

use crate::image::platform::BUILD_PLATFORM_ARGS;
use crate::support::error::{Error, Result};

/// An image a Dockerfile builds FROM (or copies from), after argument substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromRef {
    pub image: String,
    /// 1-based line of the instruction in the Dockerfile.
    pub line: usize,
    /// The FROM's `--platform=` after substitution; `None`: the target platform.
    pub platform: Option<String>,
}

/// A `RUN --mount=type=secret` of the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub id: String,
    pub line: usize,
}

/// What a recipe needs, read from its text for one set of arguments.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// External images in order (`COPY --from=<image>` included).
    pub refs: Vec<FromRef>,
    /// Stage names (`AS name`, lowercased) in order.
    pub stages: Vec<String>,
    /// Every FROM's `--platform=` after substitution, with its line (scratch included).
    pub platforms: Vec<(String, usize)>,
    /// Secrets mounted by RUN steps, in order, each id once.
    pub secrets: Vec<SecretUse>,
    /// The first construct only BuildKit builds (`line N: RUN --mount`), if any.
    pub buildkit_only: Option<String>,
    /// Whether the recipe reads `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH` or `BUILDVARIANT`
    /// anywhere: its output may then depend on the builder's platform.
    pub reads_build_platform: bool,
}

/// Reads `text` with `args` (build args and the automatic platform args) as the build will.
pub fn analyze(text: &str, args: &BTreeMap<String, String>) -> Result<Analysis> {
    let mut a = Analysis { reads_build_platform: reads_build_platform(text), ..Analysis::default() };
    for r in scan(text, args)? {
        match r {
            Found::Ref(r) => a.refs.push(FromRef { image: r.image, line: r.line, platform: r.platform }),
            Found::Stage(name) => a.stages.push(name),
            Found::Platform(p, line) if p.is_empty() => {
                return Err(Error::usage(format!(
                    "line {line}: FROM --platform= resolves to an empty platform; set the build argument it uses"
                )))
            }
            Found::Platform(p, line) => a.platforms.push((p, line)),
            Found::Secret(s) => {
                if !a.secrets.iter().any(|x| x.id == s.id) {
                    a.secrets.push(s)
                }
            }
            Found::BuildKitOnly(what) => {
                a.buildkit_only.get_or_insert(what);
            }
        }
    }
    Ok(a)
}

/// `text` with every external image reference for which `replace` returns a value
/// replaced by it; everything else is kept byte for byte. A Dockerfile that does not
/// parse is returned unchanged (building it reports the error).
pub fn rewrite_refs(
    text: &str,
    args: &BTreeMap<String, String>,
    mut replace: impl FnMut(&FromRef) -> Option<String>,
) -> String {
    let Ok(found) = scan(text, args) else { return text.to_string() };
    let mut edits: Vec<(usize, usize, String)> = found
        .into_iter()
        .filter_map(|f| match f {
            Found::Ref(r) => {
                let from = FromRef { image: r.image, line: r.line, platform: r.platform };
                replace(&from).map(|new| (r.span.0, r.span.1, new))
            }
            _ => None,
        })
        .collect();
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, new) in edits {
        out.push_str(&text[at..start]);
        out.push_str(&new);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` for the classic builder, which knows none of BuildKit's automatic platform
/// args: they are declared (`ARG TARGETPLATFORM`...) before the first instruction, so
/// a `FROM --platform=$BUILDPLATFORM` means the same on both builders once the values
/// are passed as build args. Parser directives stay first.
pub fn declare_platform_args(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 200);
    let mut rest = text;
    while let Some(line) = rest.split_inclusive('\n').next() {
        if !is_directive(line) {
            break;
        }
        out.push_str(line);
        rest = &rest[line.len()..];
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for name in crate::image::platform::TARGET_PLATFORM_ARGS.iter().chain(&BUILD_PLATFORM_ARGS) {
        out.push_str("ARG ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str(rest);
    out
}

/// `text` without a `# syntax=docker/dockerfile:...` directive: that frontend image
/// would be pulled from Docker Hub, and the engine's built-in frontend builds what it
/// asks for (mounts, secrets, platforms). Another `syntax` (a custom frontend) is kept.
/// The other directives stay first and in force (an empty line would end them, as a
/// comment would), and a blank line after them keeps every instruction on its line.
/// Returns `None` when there was nothing to drop.
pub fn drop_official_syntax(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let directives = lines.iter().take_while(|l| is_directive(l)).count();
    let official = |line: &str| {
        let (key, value) = line.trim().trim_start_matches('#').split_once('=').unwrap_or_default();
        let value = value.trim();
        key.trim().eq_ignore_ascii_case("syntax")
            && (value.starts_with("docker/dockerfile:") || value.starts_with("docker.io/docker/dockerfile:"))
    };
    let dropped = lines[..directives].iter().position(|l| official(l))?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        if i != dropped {
            out.push_str(line);
        }
        if i + 1 == directives && lines[dropped].ends_with('\n') {
            out.push('\n');
        }
    }
    Some(out)
}

/// The farm image named by `image_ref` (`<local_prefix>/<name>[:tag][@digest]`), if any:
/// the `<name>` part, which the caller looks up in the catalog.
pub fn farm_parent<'a>(image_ref: &'a str, local_prefix: &str) -> Option<&'a str> {
    let prefix = local_prefix.trim_end_matches('/');
    let rest = image_ref.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest.split_once('@').map_or(rest, |(name, _)| name);
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let name = match rest[last_slash..].find(':') {
        Some(colon) => &rest[..last_slash + colon],
        None => rest,
    };
    (!name.is_empty() && name.split('/').all(crate::image::reference::valid_path_component)).then_some(name)
}

/// A `# key=value` parser directive line.
fn is_directive(line: &str) -> bool {
    let Some(body) = line.trim().strip_prefix('#') else { return false };
    let Some((key, _)) = body.split_once('=') else { return false };
    let key = key.trim();
    !key.is_empty() && !key.contains(char::is_whitespace)
}

/// Whether `text` names one of the BUILD* platform args as a whole word.
fn reads_build_platform(text: &str) -> bool {
    BUILD_PLATFORM_ARGS.iter().any(|name| {
        text.match_indices(name).any(|(i, _)| {
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let before = text[..i].chars().next_back().is_none_or(|c| !word(c));
            let after = text[i + name.len()..].chars().next().is_none_or(|c| !word(c));
            before && after
        })
    })
}

/// One external image reference with the byte range of its text in the Dockerfile.
struct RawRef {
    image: String,
    line: usize,
    span: (usize, usize),
    platform: Option<String>,
}

/// What [`scan`] finds, in the order of the text.
enum Found {
    Ref(RawRef),
    Stage(String),
    Platform(String, usize),
    Secret(SecretUse),
    BuildKitOnly(String),
}

/// A character of a logical line and its byte offset in the original text.
type Located = (usize, char);

/// One instruction: its joined characters and the line it starts on.
struct Instruction {
    chars: Vec<Located>,
    line: usize,
}

/// The value of a `--name=value` flag word, if `w` is that flag (case-insensitive name).
fn flag<'a>(w: &'a [Located], name: &str) -> Option<&'a [Located]> {
    let prefix = format!("--{name}=");
    let t = word_text(w);
    (t.len() > prefix.len() && t.get(..prefix.len()).is_some_and(|f| f.eq_ignore_ascii_case(&prefix)))
        .then(|| &w[prefix.chars().count()..])
}

fn scan(text: &str, build_args: &BTreeMap<String, String>) -> Result<Vec<Found>> {
    // The automatic platform args are defined in the global scope without an ARG.
    let mut args: BTreeMap<String, String> = build_args
        .iter()
        .filter(|(k, _)| {
            crate::image::platform::TARGET_PLATFORM_ARGS.contains(&k.as_str())
                || BUILD_PLATFORM_ARGS.contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut stage_count = 0usize;
    let mut seen_from = false;
    let mut out = Vec::new();
    for ins in instructions(text) {
        let words = split_words(&ins.chars);
        let Some(first) = words.first() else { continue };
        let keyword = word_text(first).to_ascii_uppercase();
        match keyword.as_str() {
            "ARG" if !seen_from => {
                for w in &words[1..] {
                    let w = unquote(&word_text(w));
                    let (name, default) = match w.split_once('=') {
                        Some((n, v)) => (n.to_string(), Some(unquote(v))),
                        None => (w.clone(), None),
                    };
                    let value = build_args
                        .get(&name)
                        .cloned()
                        .or(default.map(|d| substitute(&d, &args)))
                        .or_else(|| args.get(&name).cloned());
                    args.insert(name, value.unwrap_or_default());
                }
            }
            "FROM" => {
                seen_from = true;
                let platform =
                    words[1..].iter().find_map(|w| flag(w, "platform")).map(|v| substitute(&word_text(v), &args));
                let rest: Vec<&[Located]> =
                    words[1..].iter().copied().filter(|w| !word_text(w).starts_with("--")).collect();
                let (image_word, alias) = match rest.as_slice() {
                    [img] => (*img, None),
                    [img, as_kw, name] if word_text(as_kw).eq_ignore_ascii_case("as") => {
                        (*img, Some(word_text(name).to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(Error::usage(format!(
                            "line {}: cannot parse '{}': expected FROM [--platform=...] <image> [AS <name>]",
                            ins.line,
                            line_text(&ins.chars).trim()
                        )))
                    }
                };
                let image = substitute(&word_text(image_word), &args);
                if image.is_empty() {
                    return Err(Error::usage(format!(
                        "line {}: FROM '{}' resolves to an empty image name; set the build argument it uses",
                        ins.line,
                        word_text(image_word)
                    )));
                }
                if let Some(p) = &platform {
                    out.push(Found::Platform(p.clone(), ins.line));
                }
                let lower = image.to_ascii_lowercase();
                if lower != "scratch" && !stages.contains(&lower) {
                    out.push(Found::Ref(RawRef { image, line: ins.line, span: span(image_word), platform }));
                }
                stage_count += 1;
                if let Some(a) = alias {
                    stages.insert(a.clone());
                    out.push(Found::Stage(a));
                }
            }
            "RUN" => {
                for w in words[1..].iter().take_while(|w| word_text(w).starts_with("--")) {
                    let name = word_text(w);
                    let name = name.split('=').next().unwrap_or_default().to_ascii_lowercase();
                    out.push(Found::BuildKitOnly(format!("line {}: RUN {name}", ins.line)));
                    if let Some(m) = flag(w, "mount") {
                        if let Some(id) = secret_id(&substitute(&word_text(m), &args)) {
                            out.push(Found::Secret(SecretUse { id, line: ins.line }));
                        }
                    }
                }
            }
            "COPY" | "ADD" => {
                for w in &words[1..] {
                    if !word_text(w).starts_with("--") {
                        break;
                    }
                    if let Some(value) = flag(w, "from") {
                        let image = substitute(&word_text(value), &args);
                        let lower = image.to_ascii_lowercase();
                        let is_index = lower.parse::<usize>().is_ok_and(|i| i < stage_count);
                        if !image.is_empty() && !is_index && !stages.contains(&lower) && lower != "scratch" {
                            out.push(Found::Ref(RawRef { image, line: ins.line, span: span(value), platform: None }));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The secret id of a `--mount` value (`type=secret,id=tok,target=...`), BuildKit's
/// rules: `id` defaults to the base name of `target` (or `dst`/`destination`).
fn secret_id(mount: &str) -> Option<String> {
    let fields: BTreeMap<String, String> = mount
        .split(',')
        .filter_map(|f| f.split_once('=').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    if fields.get("type").map(String::as_str) != Some("secret") {
        return None;
    }
    fields.get("id").cloned().or_else(|| {
        let target = fields.get("target").or(fields.get("dst")).or(fields.get("destination"))?;
        target.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_string)
    })
}

fn word_text(w: &[Located]) -> String {
    w.iter().map(|&(_, c)| c).collect()
}

fn line_text(w: &[Located]) -> String {
    word_text(w)
}

fn span(w: &[Located]) -> (usize, usize) {
    let first = w.first().expect("words are not empty");
    let last = w.last().expect("words are not empty");
    (first.0, last.0 + last.1.len_utf8())
}

fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

fn split_words(chars: &[Located]) -> Vec<&[Located]> {
    chars.split(|&(_, c)| c.is_whitespace()).filter(|w| !w.is_empty()).collect()
}

/// Splits the text into instructions: directives and comments dropped, continuations joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        lines.push((offset, line));
        offset += raw.len();
    }
    // Parser directives: `# key=value` lines at the very top.
    let mut start = 0;
    for (_, line) in lines.iter().take_while(|(_, l)| is_directive(l)) {
        let (key, value) = line.trim().trim_start_matches('#').split_once('=').unwrap_or_default();
        if key.trim().eq_ignore_ascii_case("escape") && value.trim() == "`" {
            escape = '`';
        }
        start += 1;
    }
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, &(off, line)) in lines.iter().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue; // comments are dropped, even inside a continuation
        }
        let body = line.trim_end();
        let (body, continues) = match body.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (body, false),
        };
        let ins = current.get_or_insert_with(|| Instruction { chars: Vec::new(), line: i + 1 });
        if !ins.chars.is_empty() {
            ins.chars.push((off, ' '));
        }
        ins.chars.extend(body.char_indices().map(|(j, c)| (off + j, c)));
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    out
}

/// Expands `$VAR`, `${VAR}` and the `${VAR:-x}` family; unknown variables expand to "".
fn substitute(word: &str, args: &BTreeMap<String, String>) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i..].iter().position(|&c| c == '}') else {
                out.extend(&chars[i..]);
                break;
            };
            let inner: String = chars[i + 2..i + close].iter().collect();
            out.push_str(&expand_braced(&inner, args));
            i += close + 1;
        } else if c == '$' && chars.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
            let end = chars[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                .map_or(chars.len(), |p| i + 1 + p);
            let name: String = chars[i + 1..end].iter().collect();
            out.push_str(args.get(&name).map_or("", String::as_str));
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn expand_braced(inner: &str, args: &BTreeMap<String, String>) -> String {
    for op in [":-", ":+", "-", "+"] {
        if let Some((name, word)) = inner.split_once(op) {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let value = args.get(name);
                let set = if op.starts_with(':') { value.is_some_and(|v| !v.is_empty()) } else { value.is_some() };
                let word = substitute(word, args);
                return match (op.ends_with('-'), set) {
                    (true, true) => value.cloned().unwrap_or_default(),
                    (true, false) => word,
                    (false, true) => word,
                    (false, false) => String::new(),
                };
            }
        }
    }
    args.get(inner).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn refs(text: &str, a: &[(&str, &str)]) -> Vec<FromRef> {
        analyze(text, &args(a)).unwrap().refs
    }

    fn images(text: &str, a: &[(&str, &str)]) -> Vec<String> {
        refs(text, a).into_iter().map(|r| r.image).collect()
    }

    fn platform_args() -> BTreeMap<String, String> {
        let t = crate::image::platform::ArchTable::builtin();
        crate::image::platform::platform_args(&t.parse_platform("arm64").unwrap(), &t.parse_platform("amd64").unwrap())
    }

    #[test]
    fn stages_scratch_and_case() {
        let text = "# syntax=docker/dockerfile:1\n\
                    from golang:1.22 AS Builder\nRUN make\n\
                    FROM scratch\n\
                    FROM builder AS again\n\
                    From --platform=$BUILDPLATFORM debian:12 as final\n\
                    COPY --from=builder /a /b\nCOPY --from=0 /a /b\n\
                    copy --chown=1:1 --from=busybox:1.36 /bin/sh /sh\n";
        let a = analyze(text, &platform_args()).unwrap();
        assert_eq!(
            a.refs.iter().map(|r| r.image.as_str()).collect::<Vec<_>>(),
            ["golang:1.22", "debian:12", "busybox:1.36"]
        );
        assert_eq!(a.refs.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 6, 9]);
        assert_eq!(a.stages, ["builder", "again", "final"]);
    }

    #[test]
    fn args_continuations_and_comments() {
        let text = "ARG BASE=ubuntu\nARG TAG\nARG REG=\"docker.io\"\n\
                    FROM \\\n  # a comment inside\n  ${REG}/${BASE}:${TAG:-22.04} \\\n  AS x\n\
                    FROM $BASE\n";
        assert_eq!(images(text, &[]), ["docker.io/ubuntu:22.04", "ubuntu"]);
        assert_eq!(images(text, &[("TAG", "24.04"), ("BASE", "debian")]), ["docker.io/debian:24.04", "debian"]);
        assert_eq!(refs(text, &[])[0].line, 4);
    }

    #[test]
    fn escape_directive() {
        let text = "# escape=`\nFROM `\n  alpine:3.19\nRUN echo \\\n";
        assert_eq!(images(text, &[]), ["alpine:3.19"]);
    }

    #[test]
    fn bad_from_names_the_line() {
        let err = analyze("FROM\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = analyze("# hi\n\nFROM a b c d\n", &BTreeMap::new()).unwrap_err();
        assert!(err.message().contains("line 3"), "{}", err.message());
        let err = analyze("FROM $NOPE\n", &BTreeMap::new()).unwrap_err();
        assert!(err.message().contains("empty"), "{}", err.message());
        let err = analyze("FROM --platform=$BUILDPLATFORM x\n", &BTreeMap::new()).unwrap_err();
        assert!(err.message().contains("empty platform"), "{}", err.message());
    }

    #[test]
    fn platform_args_reach_from_lines_without_an_arg() {
        let text = "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nARG TARGETARCH\n\
                    RUN GOARCH=$TARGETARCH go build\n\
                    FROM --platform=linux/amd64 tools-${TARGETARCH}\nFROM alpine\n";
        let a = analyze(text, &platform_args()).unwrap();
        let got: Vec<(&str, Option<&str>)> = a.refs.iter().map(|r| (r.image.as_str(), r.platform.as_deref())).collect();
        assert_eq!(got, [("golang:1.22", Some("linux/amd64")), ("tools-arm64", Some("linux/amd64")), ("alpine", None)]);
        assert!(a.reads_build_platform);
        assert!(a.buildkit_only.is_none());
        // A user's build arg is not visible in FROM without an ARG; the platform args are.
        assert_eq!(images("FROM x${V}\n", &[("V", "1")]), ["x"]);
        // An ARG without a default keeps the automatic value.
        let text = "ARG TARGETARCH\nFROM base-$TARGETARCH\n";
        assert_eq!(analyze(text, &platform_args()).unwrap().refs[0].image, "base-arm64");
    }

    #[test]
    fn reading_build_platform_is_a_whole_word() {
        let read = |t: &str| analyze(t, &BTreeMap::new()).unwrap().reads_build_platform;
        assert!(read("FROM x\nARG BUILDARCH\nRUN echo $BUILDARCH\n"));
        assert!(read("FROM x\nRUN echo ${BUILDOS:-linux}\n"));
        assert!(!read("FROM x\nRUN echo $MYBUILDARCH $BUILDARCH_X $TARGETARCH\n"));
    }

    #[test]
    fn secrets_and_buildkit_only_flags() {
        let text = "FROM x\nRUN echo hi\n\
                    RUN --mount=type=cache,target=/c make\n\
                    RUN --mount=type=secret,id=tok --mount=type=secret,target=/root/.npmrc cat /run/secrets/tok\n\
                    RUN --mount=type=secret,id=tok true\n";
        let a = analyze(text, &BTreeMap::new()).unwrap();
        assert_eq!(a.buildkit_only.as_deref(), Some("line 3: RUN --mount"));
        assert_eq!(a.secrets, [SecretUse { id: "tok".into(), line: 4 }, SecretUse { id: ".npmrc".into(), line: 4 }]);
        assert!(analyze("FROM x\nRUN make\n", &BTreeMap::new()).unwrap().buildkit_only.is_none());
    }

    #[test]
    fn rewrite_keeps_everything_else() {
        let text = "ARG P=gvisor.dev/images\n# c\nFROM --platform=linux/arm64 ${P}/basic/alpine:latest AS base\n\
                    FROM base\nCOPY --from=${P}/basic/alpine /x /y\nFROM other\n";
        let out = rewrite_refs(text, &BTreeMap::new(), |r| match (r.image.as_str(), r.platform.as_deref()) {
            ("gvisor.dev/images/basic/alpine:latest", Some("linux/arm64")) => Some("sha256:aaa".into()),
            ("gvisor.dev/images/basic/alpine", None) => Some("sha256:bbb".into()),
            _ => None,
        });
        assert_eq!(
            out,
            "ARG P=gvisor.dev/images\n# c\nFROM --platform=linux/arm64 sha256:aaa AS base\n\
             FROM base\nCOPY --from=sha256:bbb /x /y\nFROM other\n"
        );
        assert_eq!(rewrite_refs(text, &BTreeMap::new(), |_| None), text);
    }

    #[test]
    fn classic_gets_the_platform_args_declared_after_directives() {
        let out = declare_platform_args("# escape=`\nFROM --platform=$BUILDPLATFORM x\n");
        assert!(out.starts_with("# escape=`\nARG TARGETPLATFORM\n"), "{out}");
        assert!(out.ends_with("ARG BUILDVARIANT\nFROM --platform=$BUILDPLATFORM x\n"), "{out}");
        let a = analyze(&out, &platform_args()).unwrap();
        assert_eq!(a.refs[0].platform.as_deref(), Some("linux/amd64"));
    }

    #[test]
    fn the_official_syntax_directive_is_dropped_keeping_lines() {
        let text = "# syntax=docker/dockerfile:1.4\nFROM x\n";
        assert_eq!(drop_official_syntax(text).as_deref(), Some("\nFROM x\n"));
        assert_eq!(drop_official_syntax("# syntax=example.com/my/frontend\nFROM x\n"), None);
        assert_eq!(drop_official_syntax("FROM x\n# syntax=docker/dockerfile:1\n"), None);
        // An escape directive after it stays a directive (an empty line would end them).
        let text = "# syntax=docker/dockerfile:1\n# escape=`\nFROM `\n  alpine\n";
        assert_eq!(drop_official_syntax(text).as_deref(), Some("# escape=`\n\nFROM `\n  alpine\n"));
        assert_eq!(analyze(&drop_official_syntax(text).unwrap(), &BTreeMap::new()).unwrap().refs[0].line, 3);
    }

    #[test]
    fn farm_parents() {
        let p = "gvisor.dev/images";
        assert_eq!(farm_parent("gvisor.dev/images/basic/alpine", p), Some("basic/alpine"));
        assert_eq!(farm_parent("gvisor.dev/images/basic/alpine:latest", p), Some("basic/alpine"));
        assert_eq!(farm_parent("gvisor.dev/images/default@sha256:abc", p), Some("default"));
        assert_eq!(farm_parent("gvisor.dev/imagesx/default", p), None);
        assert_eq!(farm_parent("ubuntu:22.04", p), None);
        assert_eq!(farm_parent("localhost:5000/x/y:1", "localhost:5000/x"), Some("y"));
    }

    mod properties {
        //! Bounded property runs over arbitrary text and over generated recipes.
        use super::*;
        use proptest::prelude::*;

        /// Text made of what recipes are made of, in any order.
        fn recipe_like() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just("FROM ".to_string()),
                    Just("from ".to_string()),
                    Just("ARG ".to_string()),
                    Just("COPY --from=".to_string()),
                    Just("RUN --mount=type=secret,".to_string()),
                    Just(" AS ".to_string()),
                    Just("--platform=".to_string()),
                    Just("# escape=`\n".to_string()),
                    Just("# syntax=docker/dockerfile:1\n".to_string()),
                    "[a-z0-9:/.=$`\\\\{}#\"' \t\r\n+-]{1,8}",
                    any::<char>().prop_map(String::from),
                ],
                0..24,
            )
            .prop_map(|parts| parts.concat())
        }

        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), recipe_like()]
        }

        fn stage() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9]{0,4}"
        }

        fn image() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9]{0,5}(:[a-z0-9.]{1,5})?",
                "[a-z]{1,4}\\.io/[a-z]{1,5}(@sha256:[0-9a-f]{64})?",
                Just("${REG}/base:${TAG:-1}".to_string()),
                Just("$REG/tools-${TARGETARCH}".to_string()),
                Just("scratch".to_string()),
            ]
        }

        /// One instruction (or comment) of a generated recipe, as text.
        fn line() -> impl Strategy<Value = String> {
            let platform =
                proptest::option::of(prop::sample::select(vec!["linux/arm64", "$BUILDPLATFORM", "${TARGETPLATFORM}"]));
            prop_oneof![
                (platform, image(), proptest::option::of(stage()), any::<bool>()).prop_map(|(p, i, a, split)| {
                    let p = p.map(|p| format!("--platform={p} ")).unwrap_or_default();
                    let a = a.map(|a| format!(" AS {a}")).unwrap_or_default();
                    let gap = if split { " \\\n  # inside\n  " } else { " " };
                    format!("FROM {p}{gap}{i}{a}")
                }),
                ("[A-Z]{1,4}", proptest::option::of("[a-z0-9.]{0,5}"))
                    .prop_map(|(n, d)| format!("ARG {n}{}", d.map(|d| format!("={d}")).unwrap_or_default())),
                Just("ARG REG=docker.io".to_string()),
                prop_oneof![stage(), image(), Just("0".to_string())].prop_map(|f| format!("COPY --from={f} /a /b")),
                Just("RUN --mount=type=secret,id=tok true".to_string()),
                Just("RUN make \\\n  all".to_string()),
                Just("# a comment".to_string()),
                Just(String::new()),
            ]
        }

        fn recipe() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec![
                    "",
                    "# syntax=docker/dockerfile:1\n",
                    "# syntax=docker/dockerfile:1\n# escape=`\n",
                ]),
                prop::collection::vec(line(), 1..10),
            )
                .prop_map(|(directives, lines)| format!("{directives}{}\n", lines.join("\n")))
        }

        fn build_args() -> BTreeMap<String, String> {
            let mut a = platform_args();
            a.insert("TAG".into(), "2".into());
            a
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(800))]

            #[test]
            fn any_text_is_read_or_refused_without_a_panic(text in any_text()) {
                let args = build_args();
                if let Err(e) = analyze(&text, &args) {
                    prop_assert_eq!(e.exit_code(), 2);
                }
                let _ = analyze(&text, &BTreeMap::new());
                prop_assert_eq!(rewrite_refs(&text, &args, |_| None), text.clone());
                let _ = rewrite_refs(&text, &args, |r| Some(format!("{}-x", r.image)));
                let _ = declare_platform_args(&text);
                let _ = drop_official_syntax(&text);
                let _ = farm_parent(&text, "gvisor.dev/images");
            }

            /// A farm parent's name never climbs out of the catalog.
            #[test]
            fn farm_parents_are_image_names(rest in "[a-z0-9:/@._-]{0,30}") {
                if let Some(name) = farm_parent(&format!("gvisor.dev/images/{rest}"), "gvisor.dev/images") {
                    prop_assert!(name.split('/').all(crate::image::reference::valid_path_component), "{rest}: {name}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Every external reference rewritten is found again, with its line and
            /// platform, in the rewritten text; nothing else changes.
            #[test]
            fn rewritten_references_are_read_back(text in recipe()) {
                let args = build_args();
                let Ok(before) = analyze(&text, &args) else { return Ok(()) };
                let mut n = 0;
                let out = rewrite_refs(&text, &args, |_| {
                    n += 1;
                    Some(format!("registry.test/r{n}:t"))
                });
                let after = analyze(&out, &args).map_err(|e| TestCaseError::fail(format!("{out:?}: {}", e.message())))?;
                let want: Vec<FromRef> = before
                    .refs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| FromRef { image: format!("registry.test/r{}:t", i + 1), ..r.clone() })
                    .collect();
                prop_assert_eq!(after.refs, want, "{:?}", out);
                prop_assert_eq!(after.stages, before.stages);
                prop_assert_eq!(out.lines().count(), text.lines().count());
            }

            /// The classic builder's copy reads the same, its lines moved by the ARGs.
            #[test]
            fn declared_platform_args_change_nothing_else(text in recipe()) {
                let args = build_args();
                let out = declare_platform_args(&text);
                let moved = crate::image::platform::TARGET_PLATFORM_ARGS.len() + BUILD_PLATFORM_ARGS.len();
                match (analyze(&text, &args), analyze(&out, &args)) {
                    (Ok(a), Ok(b)) => {
                        let shifted: Vec<FromRef> = a.refs.into_iter().map(|r| FromRef { line: r.line + moved, ..r }).collect();
                        prop_assert_eq!(b.refs, shifted);
                        prop_assert_eq!(b.stages, a.stages);
                    }
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "{text:?}: {:?} became {:?}", a.map(|a| a.refs), b.map(|b| b.refs)),
                }
            }

            /// Dropping the official syntax directive keeps every line where it was and
            /// every other directive in force.
            #[test]
            fn dropping_the_syntax_directive_changes_nothing_else(text in recipe()) {
                let Some(out) = drop_official_syntax(&text) else { return Ok(()) };
                prop_assert_eq!(out.matches('\n').count(), text.matches('\n').count());
                let args = build_args();
                match (analyze(&text, &args), analyze(&out, &args)) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(b.refs, a.refs, "{:?}", out),
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "{text:?}: {:?} became {:?}", a.map(|a| a.refs), b.map(|b| b.refs)),
                }
            }
        }
    }
}
