//! `.dockerignore` exactly as Docker reads and applies it, so a build context holds what
//! `docker build` would send.
//!
//! Docker's rules, from moby's `patternmatcher` (and its `ignorefile.ReadAll`) and the
//! walk of moby's `pkg/archive` (`TarWithOptions`, which `docker build` runs):
//!
//! - **Lines.** A UTF-8 BOM is dropped; a line starting with `#` is a comment (a `#`
//!   after leading spaces is not); surrounding whitespace is trimmed; empty lines are
//!   skipped. A leading `!` makes an exception (whitespace after it is trimmed too); a
//!   bare `!` (or `!/`) is an error.
//! - **Cleaning.** A pattern is cleaned like Go's `filepath.Clean` (`a//b/./c/..` is
//!   `a/b`), then one leading `/` is dropped: `/build` is `build`.
//! - **Syntax.** `*` is any run of characters but `/`, `?` one character but `/`,
//!   `[...]` a class (`[^...]` negated; a class may match `/`), `\` escapes the next
//!   character; `**` is any number of directories, including none (`a/**/b` matches
//!   `a/b`), and a trailing `**` anything below. A pattern that Go's `filepath.Match`
//!   calls malformed (`[`, `[]a]`, `[x-]`, a trailing `\`) is an error. Docker turns a
//!   pattern into a Go regular expression and, for patterns without wildcards, a plain
//!   comparison; the quirks of that translation are kept: `**foo` matches any path
//!   ending in `foo` (`barfoo` too), `**` does not cross a newline in a name, and an
//!   unescaped `^` anchors. Where the translation gives a pattern a meaning its author
//!   cannot have wanted (`\d` a digit class, `*` inside `[...]`, `[:alpha:]`, a
//!   reversed range `[z-a]`, which Docker reports only while matching), the pattern is
//!   refused here with the line and what to write instead.
//! - **Matching.** Every path is matched as a whole, relative and `/`-separated; a
//!   pattern that matches a directory matches everything below it. Patterns are read in
//!   order and the last one that matches decides: an exception re-includes. Docker
//!   evaluates this incrementally down the tree (`MatchesUsingParentResults`): each
//!   directory remembers which patterns matched it or a parent, a pattern is only
//!   tried when it could change the verdict so far, and [`DirMatches`] carries exactly
//!   that down, so the few orders where this differs from a plain "last match wins"
//!   (`*`, `!a/b`, `a` keeps `a/b`) come out as Docker has them.
//! - **The walk.** An excluded directory is entered only when an exception, as written,
//!   names a path inside it ([`Patterns::may_reinclude_below`]): `*` then `!dir/**/x`
//!   sends `dir/x` but not `dir/sub/x`, because `dir/sub` is excluded and no exception
//!   starts with `dir/sub/`. Docker 20.10's engine and both of its builders do the same;
//!   BuildKit from Docker 23 on enters every excluded directory when any exception has
//!   a wildcard, and would send `dir/sub/x` too (see docs/content-keys.md).
//!
//! Hand-written rather than `globset`: no glob crate has Docker's semantics (its fast
//! paths, `**` and the parent rules above). The `regex` crate matches the regular
//! expressions Docker builds, with the same meaning (both follow RE2: `.` stops at a
//! newline, a negated class does not, `^` is the start of the text).

use regex::Regex;

use crate::support::error::{Error, Result};

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct Patterns {
    patterns: Vec<Pattern>,
}

/// One pattern: its cleaned text (without `!`) and how Docker compares paths with it.
#[derive(Debug)]
struct Pattern {
    text: String,
    exception: bool,
    matcher: Matcher,
}

/// Docker's four kinds of comparison (patternmatcher's `matchType`).
#[derive(Debug)]
enum Matcher {
    /// No wildcard at all: the path is the text.
    Exact,
    /// Plain text then a trailing `**`: the path starts with the text before it.
    Prefix(String),
    /// A leading `**` then plain text: the path ends with the text after it.
    Suffix(String),
    Regex(Regex),
}

/// Which patterns matched a directory or one of its parents, as Docker records it for
/// the entries below (patternmatcher's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirMatches(Vec<bool>);

impl Patterns {
    /// Reads the text of a `.dockerignore`; a malformed pattern is a usage error naming
    /// its line.
    pub fn parse(text: &str) -> Result<Patterns> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let fail = |why: &str| Error::usage(format!("line {}: pattern '{}' {why}", i + 1, line.trim()));
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let mut text = if pattern.is_empty() { String::new() } else { go_clean(pattern) };
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
            // Docker cleans `!` and the pattern once more as one path: `!/` becomes `!`.
            if exception && (text.is_empty() || text == "/") {
                return Err(fail("is a bare '!', which excludes nothing from nothing; remove it or name a path"));
            }
            let matcher = compile(&text).map_err(|why| fail(&why))?;
            patterns.push(Pattern { text, exception, matcher });
        }
        Ok(Patterns { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` is excluded, given what matched its directory (`None` for an entry
    /// of the context's root, or when the parents were not walked: then they are
    /// matched here), and what to hand to the entries below `path` if it is a folder.
    pub fn decide(&self, path: &str, parent: Option<&DirMatches>) -> (bool, DirMatches) {
        let parent = parent.filter(|p| !p.0.is_empty());
        let mut excluded = false;
        let mut matched = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.is_some_and(|d| d.0[i]);
            if !m {
                // Docker tries a pattern only when it could change the verdict so far,
                // and records it as not matched otherwise.
                if p.exception != excluded {
                    continue;
                }
                m = p.matches(path) || (parent.is_none() && ancestors(path).iter().any(|a| p.matches(a)));
            }
            matched[i] = m;
            if m {
                excluded = !p.exception;
            }
        }
        (excluded, DirMatches(matched))
    }

    /// Whether an exception could re-include something inside the excluded folder `dir`:
    /// Docker enters an excluded folder only when an exception's text starts with
    /// `dir/` (a path inside it, or the folder itself).
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        self.patterns.iter().any(|p| {
            p.exception && p.text.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            // `**/foo` also matches `foo` itself.
            Matcher::Suffix(s) => path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s),
            Matcher::Regex(r) => r.is_match(path),
        }
    }
}

/// The parent folders of `path`, outermost first, as Go's `filepath.Dir` and a split
/// give them (none for an entry of the root).
fn ancestors(path: &str) -> Vec<String> {
    let Some(slash) = path.rfind('/') else { return Vec::new() };
    let dir = go_clean(&path[..=slash]);
    if dir == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = dir.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// Go's `filepath.Clean` for a `/`-separated path.
fn go_clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            c => parts.push(c),
        }
    }
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_string(),
        (false, false) => parts.join("/"),
    }
}

/// How Docker compares paths with the cleaned pattern `text` (patternmatcher's
/// `compile`, after `filepath.Match`'s syntax check), or why the pattern is refused.
fn compile(text: &str) -> std::result::Result<Matcher, String> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(?:.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                let next = *chars.get(i).ok_or("ends in a backslash, which escapes nothing; remove it")?;
                re.push_str(&regex::escape(&escaped(next)?.to_string()));
                i += 1;
                kind = Kind::Regex;
            }
            '[' => {
                i = class(&chars, i, &mut re)?;
                kind = Kind::Regex;
            }
            ']' => {
                re.push_str("\\]");
                kind = Kind::Regex;
            }
            // Docker leaves `^` as it is: in its regular expression, the start of the text.
            '^' => re.push('^'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(text[..text.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(text[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|e| format!("cannot be matched: {e}"))?)
        }
    })
}

/// The character `\c` stands for. Docker copies the escape into a Go regular expression,
/// where only punctuation stands for itself (`\d` is a digit, `\b` a word boundary).
fn escaped(c: char) -> std::result::Result<char, String> {
    if c.is_ascii() && !c.is_ascii_alphanumeric() {
        Ok(c)
    } else {
        Err(format!(
            "escapes '{c}': Docker reads a backslash before a letter, a digit or a non-ASCII character as \
             regular-expression syntax, not as the character; write '{c}' without the backslash"
        ))
    }
}

/// Reads the class that starts after the `[` at `chars[start - 1]` into `re`; returns
/// the index after its `]`. The syntax is `filepath.Match`'s.
fn class(chars: &[char], start: usize, re: &mut String) -> std::result::Result<usize, String> {
    let unclosed = || "has a '[' without its ']'; close the class or escape the bracket as '\\['".to_string();
    let mut i = start;
    re.push('[');
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut items = 0;
    loop {
        match chars.get(i) {
            None => return Err(unclosed()),
            Some(']') if items > 0 => {
                re.push(']');
                return Ok(i + 1);
            }
            _ => {}
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            (hi, i) = class_char(chars, i + 1)?;
        }
        if i >= chars.len() {
            return Err(unclosed());
        }
        if lo > hi {
            return Err(format!(
                "has the reversed range '{lo}-{hi}' in '[...]', which Docker cannot match; write '{hi}-{lo}'"
            ));
        }
        let hex = |c: char| format!("\\x{{{:x}}}", c as u32);
        re.push_str(&hex(lo));
        if lo != hi {
            re.push('-');
            re.push_str(&hex(hi));
        }
        items += 1;
    }
}

/// One character of a class at `chars[i]` (escaped or not), and the index after it.
fn class_char(chars: &[char], i: usize) -> std::result::Result<(char, usize), String> {
    match chars.get(i) {
        None => Err("has a '[' without its ']'; close the class or escape the bracket as '\\['".into()),
        Some('-' | ']') => {
            Err(format!("has a '{}' where '[...]' needs a character; escape it as '\\{}'", chars[i], chars[i]))
        }
        Some('\\') => {
            let c = *chars.get(i + 1).ok_or("ends in a backslash, which escapes nothing; remove it")?;
            Ok((escaped(c)?, i + 2))
        }
        Some(c @ ('*' | '?')) => Err(format!(
            "has '{c}' inside '[...]', which Docker turns into a regular expression that matches other \
             characters; escape it as '\\{c}'"
        )),
        Some('[') if chars.get(i + 1) == Some(&':') => {
            Err("has '[:' inside '[...]', which Docker reads as a character class name; escape it as '\\['".into())
        }
        Some(&c) => Ok((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(lines: &[&str]) -> Patterns {
        Patterns::parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{lines:?}: {}", e.message()))
    }

    /// Docker's verdict for `path` when the walk reached it: its parents are decided
    /// first and hand their matches down (patternmatcher's own tests do the same).
    fn excluded(p: &Patterns, path: &str) -> bool {
        let mut parent: Option<DirMatches> = None;
        for dir in ancestors(path) {
            parent = Some(p.decide(&dir, parent.as_ref()).1);
        }
        p.decide(path, parent.as_ref()).0
    }

    /// moby/patternmatcher's TestMatches (single patterns) and TestMatch (Go's
    /// filepath.Match table), checked both with the parents walked and without.
    #[test]
    fn moby_match_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true),
            ("a\\*b", "a*b", true),
            // Go's filepath.Match table, as patternmatcher's TestMatch runs it.
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for &(pattern, path, want) in cases {
            let p = patterns(&[pattern]);
            assert_eq!(excluded(&p, path), want, "pattern {pattern:?}, path {path:?}, parents walked");
            assert_eq!(p.decide(path, None).0, want, "pattern {pattern:?}, path {path:?}, parents matched here");
        }
    }

    /// patternmatcher's multi-pattern cases and its exclusion tests.
    #[test]
    fn moby_exception_cases() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true),
            (
                &["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
            (&[], "/any/path/there", false),
            (&["docs", "config", ""], "config/x", true),
            (&["docs", "  !docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md  "], "docs/README.md", false),
            // Docker's incremental rule: `a` is not tried for `a` (already excluded),
            // so `a/b`, re-included by the exception, is not excluded again by it.
            (&["*", "!a/b", "a"], "a/b/f", false),
            (&["*", "!a/b", "a"], "a/c", true),
            (&["**/b", "!x/y/b/keep"], "x/y/b/other/f", true),
        ];
        for &(lines, path, want) in cases {
            assert_eq!(excluded(&patterns(lines), path), want, "patterns {lines:?}, path {path:?}");
        }
        assert!(patterns(&["docs", "!docs/README.md"]).patterns.iter().any(|p| p.exception));
        assert_eq!(patterns(&["docs", "config", ""]).patterns.len(), 2);
    }

    /// patternmatcher's ignorefile TestReadAll, and the cleaning of patterns.
    #[test]
    fn reading_and_cleaning() {
        let p = patterns(&[
            "\u{feff}test1",
            "/test2",
            "/a/file/here",
            "",
            "lastfile",
            "# this is a comment",
            "! /inverted/abs/path",
        ]);
        let texts: Vec<(&str, bool)> = p.patterns.iter().map(|p| (p.text.as_str(), p.exception)).collect();
        assert_eq!(
            texts,
            [
                ("test1", false),
                ("test2", false),
                ("a/file/here", false),
                ("lastfile", false),
                ("inverted/abs/path", true)
            ]
        );
        for (written, cleaned) in [
            ("/build/", "build"),
            ("./a//b/./c", "a/b/c"),
            ("a/../b", "b"),
            ("/../x", "x"),
            ("a/../../x", "../x"),
            ("/", "/"),
            ("./", "."),
            (" #not a comment ", "#not a comment"),
        ] {
            assert_eq!(patterns(&[written]).patterns[0].text, cleaned, "{written:?}");
        }
        // `/`, `.` and `../x` name nothing in a context.
        let p = patterns(&["/", ".", "../x"]);
        assert!(!excluded(&p, "x") && !excluded(&p, "a/b"));
    }

    #[test]
    fn malformed_and_misleading_patterns_are_refused_naming_the_line() {
        for (line, says) in [
            ("!", "bare '!'"),
            ("! ", "bare '!'"),
            ("!/", "bare '!'"),
            ("[", "without its ']'"),
            ("a[", "without its ']'"),
            ("[^", "without its ']'"),
            ("[^bc", "without its ']'"),
            ("[]a]", "needs a character"),
            ("[-]", "needs a character"),
            ("[x-]", "needs a character"),
            ("[-x]", "needs a character"),
            ("[a-b-c]", "needs a character"),
            ("\\", "backslash"),
            ("a\\", "backslash"),
            ("[\\", "backslash"),
            ("[Local-Only]/", "reversed range"),
            ("a\\d", "escapes 'd'"),
            ("[\\w]", "escapes 'w'"),
            ("x\\é", "escapes 'é'"),
            ("[*]", "inside '[...]'"),
            ("[a?]", "inside '[...]'"),
            ("[[:alpha:]]", "'[:'"),
        ] {
            let err = Patterns::parse(&format!("# first\n{line}\n")).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{line:?}");
            assert!(err.message().starts_with("line 2: "), "{line:?}: {}", err.message());
            assert!(err.message().contains(says), "{line:?}: {}", err.message());
        }
    }

    /// Where Docker's translation into a regular expression shows, archfarm agrees.
    #[test]
    fn docker_quirks_are_kept() {
        // `**foo` is compared as a plain suffix.
        let p = patterns(&["**foo"]);
        assert!(excluded(&p, "barfoo") && excluded(&p, "x/barfoo") && !excluded(&p, "foox"));
        // A negated class matches `/`; `?` and `*` do not.
        assert!(excluded(&patterns(&["x[^a]y"]), "x/y"));
        assert!(!excluded(&patterns(&["x?y"]), "x/y"));
        // `**` inside a pattern does not cross a newline, a trailing one after plain
        // text does (a prefix comparison).
        assert!(!excluded(&patterns(&["a/**/x*"]), "a/b\nc/x"));
        assert!(excluded(&patterns(&["a/**"]), "a/b\nc/x"));
        // `^` anchors in a pattern with wildcards, and is a character in one without.
        assert!(excluded(&patterns(&["a^b"]), "a^b"));
        assert!(!excluded(&patterns(&["a^b*"]), "a^bc"));
        assert!(excluded(&patterns(&["^a*"]), "ab"));
        // Regular-expression characters are plain.
        assert!(excluded(&patterns(&["a.b+(c)|{d}$*"]), "a.b+(c)|{d}$e"));
        assert!(!excluded(&patterns(&["a.b*"]), "axb"));
        // Escaped punctuation stands for itself, in and out of classes.
        assert!(excluded(&patterns(&["\\[x\\]*"]), "[x]y"));
        assert!(excluded(&patterns(&["[\\*\\?]"]), "*"));
        assert!(excluded(&patterns(&["[!a]"]), "!"), "`!` does not negate a class");
    }

    #[test]
    fn the_walk_enters_an_excluded_folder_only_for_an_exception_inside_it() {
        let p = patterns(&["*", "!dir/**/x"]);
        assert!(p.may_reinclude_below("dir"));
        assert!(!p.may_reinclude_below("dir/sub"), "no exception starts with dir/sub/");
        assert!(!p.may_reinclude_below("di"));
        let p = patterns(&["build", "!build"]);
        assert!(p.may_reinclude_below("build"));
        assert!(!patterns(&["*", "!**/x"]).may_reinclude_below("dir"));
        assert!(!patterns(&["node_modules"]).may_reinclude_below("node_modules"));
    }

    mod properties {
        //! Bounded property runs (300 cases each, about a second in a debug build).
        use super::*;
        use proptest::prelude::*;

        /// A pattern made of what patterns are made of.
        fn pattern_like() -> impl Strategy<Value = String> {
            "!?[a-c*?/.\\\\\\[\\]^ -]{1,12}"
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec("[a-c.*?\\[\\]^-]{1,4}", 1..5).prop_map(|c| c.join("/"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn any_ignore_file_is_read_or_refused_naming_a_line(text in prop_oneof![any::<String>(), prop::collection::vec(pattern_like(), 0..6).prop_map(|l| l.join("\n"))]) {
                if let Err(e) = Patterns::parse(&text) {
                    prop_assert_eq!(e.exit_code(), 2);
                    prop_assert!(e.message().starts_with("line "), "{}", e.message());
                }
            }

            /// One pattern gives the same verdict whether the parents were walked or are
            /// matched on the spot (patternmatcher's tests check both ways too).
            #[test]
            fn one_pattern_decides_the_same_walked_or_not(pattern in pattern_like(), path in path()) {
                let Ok(p) = Patterns::parse(&pattern) else { return Ok(()) };
                prop_assert_eq!(excluded(&p, &path), p.decide(&path, None).0, "{:?} {:?}", pattern, path);
            }

            /// Several patterns never panic, and exceptions alone exclude nothing.
            #[test]
            fn verdicts_never_panic(lines in prop::collection::vec(pattern_like(), 0..5), path in path()) {
                let Ok(p) = Patterns::parse(&lines.join("\n")) else { return Ok(()) };
                let _ = excluded(&p, &path);
                let _ = p.may_reinclude_below(&path);
                if lines.iter().all(|l| l.trim_start().starts_with('!')) {
                    prop_assert!(!excluded(&p, &path));
                }
            }

            /// A pattern without wildcards excludes the path it names and what is below.
            #[test]
            fn a_plain_pattern_names_a_path_and_its_contents(
                named in prop::collection::vec("[a-c]{1,3}", 1..4),
                path in prop::collection::vec("[a-c]{1,3}", 1..5),
            ) {
                let (named, path) = (named.join("/"), path.join("/"));
                let p = Patterns::parse(&named).unwrap();
                let below = path == named || path.starts_with(&format!("{named}/"));
                prop_assert_eq!(excluded(&p, &path), below);
            }
        }
    }
}
