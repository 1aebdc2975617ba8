//! Just enough of the Dockerfile grammar to know which images a recipe builds FROM, and
//! to rewrite those references to exact image IDs.
//!
//! Handled: parser directives (`# escape=` changes the continuation character), comments,
//! line continuations, case-insensitive instructions, `FROM [--flag=...] image [AS name]`,
//! `ARG` before the first `FROM` (defaults, overridden by build args) with `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}` and `${VAR+alt}`
//! substitution, and `COPY --from=<image>` (an external image, unlike `--from=<stage>`
//! or `--from=<index>`). `scratch` and references to earlier stages are not images.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};

/// An image a Dockerfile builds FROM (or copies from), after argument substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromRef {
    pub image: String,
    /// 1-based line of the instruction in the Dockerfile.
    pub line: usize,
}

/// The external images `text` builds FROM, in order (`COPY --from=<image>` included).
pub fn from_refs(text: &str, build_args: &BTreeMap<String, String>) -> Result<Vec<FromRef>> {
    Ok(analyze(text, build_args)?.into_iter().map(|r| FromRef { image: r.image, line: r.line }).collect())
}

/// `text` with every FROM image (and `COPY --from=` image) whose resolved reference is a
/// key of `replacements` replaced by its value; everything else is kept byte for byte.
/// A Dockerfile that does not parse is returned unchanged (building it reports the error).
pub fn rewrite_from(text: &str, replacements: &BTreeMap<String, String>) -> String {
    rewrite_from_with_args(text, replacements, &BTreeMap::new())
}

/// Like [`rewrite_from`], resolving `ARG` references with `build_args` as the build will.
pub fn rewrite_from_with_args(
    text: &str,
    replacements: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> String {
    let Ok(refs) = analyze(text, build_args) else { return text.to_string() };
    let mut edits: Vec<(usize, usize, &str)> =
        refs.iter().filter_map(|r| replacements.get(&r.image).map(|new| (r.span.0, r.span.1, new.as_str()))).collect();
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, new) in edits {
        out.push_str(&text[at..start]);
        out.push_str(new);
        at = end;
    }
    out.push_str(&text[at..]);
    out
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
    (!name.is_empty() && name.split('/').all(crate::config::valid_path_component)).then_some(name)
}

/// One external image reference with the byte range of its text in the Dockerfile.
struct RawRef {
    image: String,
    line: usize,
    span: (usize, usize),
}

/// A character of a logical line and its byte offset in the original text.
type Located = (usize, char);

/// One instruction: its joined characters and the line it starts on.
struct Instruction {
    chars: Vec<Located>,
    line: usize,
}

fn analyze(text: &str, build_args: &BTreeMap<String, String>) -> Result<Vec<RawRef>> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
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
                    let value = build_args.get(&name).cloned().or(default.map(|d| substitute(&d, &args)));
                    args.insert(name, value.unwrap_or_default());
                }
            }
            "FROM" => {
                seen_from = true;
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
                let lower = image.to_ascii_lowercase();
                if lower != "scratch" && !stages.contains(&lower) {
                    out.push(RawRef { image, line: ins.line, span: span(image_word) });
                }
                stage_count += 1;
                if let Some(a) = alias {
                    stages.insert(a);
                }
            }
            "COPY" | "ADD" => {
                for w in &words[1..] {
                    let t = word_text(w);
                    if !t.starts_with("--") {
                        break;
                    }
                    if t.len() > 7 && t.get(..7).is_some_and(|f| f.eq_ignore_ascii_case("--from=")) {
                        let value = &w[7..];
                        let image = substitute(&word_text(value), &args);
                        let lower = image.to_ascii_lowercase();
                        let is_index = lower.parse::<usize>().is_ok_and(|i| i < stage_count);
                        if !image.is_empty() && !is_index && !stages.contains(&lower) && lower != "scratch" {
                            out.push(RawRef { image, line: ins.line, span: span(value) });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
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
    for (_, line) in &lines {
        let Some(body) = line.trim().strip_prefix('#') else { break };
        let Some((key, value)) = body.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" && value.trim() == "`" {
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

    fn images(text: &str, args: &[(&str, &str)]) -> Vec<String> {
        let args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_refs(text, &args).unwrap().into_iter().map(|r| r.image).collect()
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
        assert_eq!(images(text, &[]), ["golang:1.22", "debian:12", "busybox:1.36"]);
        let refs = from_refs(text, &BTreeMap::new()).unwrap();
        assert_eq!(refs.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 6, 9]);
    }

    #[test]
    fn args_continuations_and_comments() {
        let text = "ARG BASE=ubuntu\nARG TAG\nARG REG=\"docker.io\"\n\
                    FROM \\\n  # a comment inside\n  ${REG}/${BASE}:${TAG:-22.04} \\\n  AS x\n\
                    FROM $BASE\n";
        assert_eq!(images(text, &[]), ["docker.io/ubuntu:22.04", "ubuntu"]);
        assert_eq!(images(text, &[("TAG", "24.04"), ("BASE", "debian")]), ["docker.io/debian:24.04", "debian"]);
        assert_eq!(from_refs(text, &BTreeMap::new()).unwrap()[0].line, 4);
    }

    #[test]
    fn escape_directive() {
        let text = "# escape=`\nFROM `\n  alpine:3.19\nRUN echo \\\n";
        assert_eq!(images(text, &[]), ["alpine:3.19"]);
    }

    #[test]
    fn bad_from_names_the_line() {
        let err = from_refs("FROM\n", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = from_refs("# hi\n\nFROM a b c d\n", &BTreeMap::new()).unwrap_err();
        assert!(err.message().contains("line 3"), "{}", err.message());
        let err = from_refs("FROM $NOPE\n", &BTreeMap::new()).unwrap_err();
        assert!(err.message().contains("empty"), "{}", err.message());
    }

    #[test]
    fn rewrite_keeps_everything_else() {
        let text = "ARG P=gvisor.dev/images\n# c\nFROM --platform=linux/arm64 ${P}/basic/alpine:latest AS base\n\
                    FROM base\nCOPY --from=${P}/basic/alpine /x /y\nFROM other\n";
        let mut rep = BTreeMap::new();
        rep.insert("gvisor.dev/images/basic/alpine:latest".to_string(), "sha256:aaa".to_string());
        rep.insert("gvisor.dev/images/basic/alpine".to_string(), "sha256:bbb".to_string());
        let out = rewrite_from(text, &rep);
        assert_eq!(
            out,
            "ARG P=gvisor.dev/images\n# c\nFROM --platform=linux/arm64 sha256:aaa AS base\n\
             FROM base\nCOPY --from=sha256:bbb /x /y\nFROM other\n"
        );
        assert_eq!(rewrite_from(text, &BTreeMap::new()), text);
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
}
