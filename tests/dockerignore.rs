//! `.dockerignore` against the real Docker: for tricky ignore files over one tree, what
//! `COPY . /ctx` sees in an image built by `docker build` must be what archfarm puts into
//! the build context (the entries it hashes into the key and streams to the engine).
//!
//! Builders: Debian's docker 20.10 (/usr/bin/docker), classic and BuildKit, and any newer
//! docker client on PATH (classic builder: its BuildKit needs the buildx plugin). Docker
//! 20.10 still matched parents with the matcher moby has since fixed (a pattern of N
//! components was tried on a path's first N components only), and 20.10's BuildKit also
//! copies an excluded folder it entered when nothing in it is kept; the cases where that
//! shows are compared with the builders that do not have these bugs. archfarm always
//! keeps `Dockerfile` and `.dockerignore` in the context, as the Docker CLI always sends
//! them (Docker's daemon then hides them from `COPY` when they are excluded), so they are
//! left out of the comparison.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use archfarm::recipe::scan::{scan, Links};
use common::*;

/// One ignore file, and which of Docker 20.10's builders must agree (see the module doc).
struct Case {
    name: &'static str,
    ignore: &'static str,
    docker_20_10: Agrees,
}

#[derive(PartialEq)]
enum Agrees {
    Both,
    ClassicOnly,
    Neither,
}

const CASES: &[Case] = &[
    // Issue 11, point 10: dir/sub is excluded by `*` and no exception starts with
    // dir/sub/, so Docker does not enter it: only dir/x comes back.
    Case { name: "exception-below-star", ignore: "*\n!dir/**/x\n", docker_20_10: Agrees::Both },
    Case {
        name: "comments-slashes-spaces",
        ignore: "# comment\n\n/build\n!build/keep/me.txt\n**/*.tmp\n./logs\n!logs/important.log\n  top.md  \n #x\n",
        docker_20_10: Agrees::Both,
    },
    // 20.10's BuildKit enters logs for the exception and copies it, empty.
    Case {
        name: "last-match-wins",
        ignore: "!logs/important.log\nlogs\n*.md\n!sub/*.md\n",
        docker_20_10: Agrees::ClassicOnly,
    },
    Case { name: "doublestar-zero-dirs", ignore: "dir/**/x\n**/deep\n", docker_20_10: Agrees::Both },
    Case {
        name: "trailing-doublestar-keeps-the-folder",
        ignore: "a/**\nsrc/*\n!src/deep\n",
        docker_20_10: Agrees::Both,
    },
    Case { name: "negated-class-crosses-slash", ignore: "p[^a]q\n[bc]arfoo\n?oo\n", docker_20_10: Agrees::Both },
    Case {
        name: "recipe-and-ignore-file-excluded",
        ignore: "Dockerfile\n.dockerignore\nempty\n",
        docker_20_10: Agrees::Both,
    },
    Case { name: "everything-but-one-folder", ignore: "*\n!a\n", docker_20_10: Agrees::Both },
    Case {
        name: "hidden-and-escaped",
        ignore: ".*\n!.hiddenfile\nstar\\*name\nwith space.txt\n",
        docker_20_10: Agrees::Both,
    },
    Case { name: "exception-for-a-whole-folder", ignore: "build\n!build/keep\n**/out.o\n", docker_20_10: Agrees::Both },
    // 20.10 compares `**foo` as a regular expression; moby now compares it as a suffix,
    // so barfoo matches too.
    Case { name: "doublestar-suffix", ignore: "**foo\n", docker_20_10: Agrees::Neither },
    // 20.10 tries `**/b` only on the first two components of deep/y/b/other/f's folder.
    Case { name: "doublestar-parent", ignore: "**/b\n!deep/y/b/keep\n", docker_20_10: Agrees::Neither },
    // `a` is not tried for `a` (already excluded), so after `!a/b` it does not exclude
    // a/b again (Docker's incremental matching); 20.10 excluded a/b.
    Case { name: "incremental-verdict", ignore: "*\n!a/b\na\n", docker_20_10: Agrees::Neither },
];

const TREE: &[&str] = &[
    "x",
    "dir/x",
    "dir/y",
    "dir/sub/x",
    "dir/sub/y",
    "dir/sub/deep/x",
    "a/b/f",
    "a/c",
    "deep/y/b/keep/f",
    "deep/y/b/other/f",
    "deep/y/b/g",
    "build/out.o",
    "build/keep/me.txt",
    "build/keep/out.o",
    "src/a.tmp",
    "src/deep/b.tmp",
    "src/deep/c.rs",
    "logs/x.log",
    "logs/important.log",
    "barfoo",
    "sub/barfoo",
    "foo",
    "top.md",
    "sub/top.md",
    "p/q",
    "paq",
    "star*name",
    "with space.txt",
    ".hidden/file",
    ".hiddenfile",
];

fn make_context(dir: &Path, ignore: &str) {
    for f in TREE {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f).unwrap();
    }
    std::fs::create_dir(dir.join("empty")).unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM busybox:1.31.1\nCOPY . /ctx\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), ignore).unwrap();
}

/// A docker client and builder that `COPY . /ctx` is tried with.
struct Builder {
    client: PathBuf,
    buildkit: bool,
    version: String,
}

impl Builder {
    fn label(&self) -> String {
        format!("{} {} ({})", self.client.display(), if self.buildkit { "BuildKit" } else { "classic" }, self.version)
    }

    /// The paths `COPY . /ctx` put into an image built from `dir`.
    fn copied(&self, dir: &Path) -> BTreeSet<String> {
        let out = Command::new(&self.client)
            .args(["build", "-q", "."])
            .current_dir(dir)
            .env("DOCKER_BUILDKIT", if self.buildkit { "1" } else { "0" })
            .output()
            .unwrap();
        assert!(out.status.success(), "{} build in {}: {}", self.label(), dir.display(), stderr(&out));
        let id = stdout(&out);
        let run = docker(&["run", "--rm", &id, "find", "/ctx"]);
        assert!(run.status.success(), "docker run {id} find /ctx: {}", stderr(&run));
        let _ = docker(&["rmi", &id]);
        stdout(&run).lines().filter_map(|l| l.strip_prefix("/ctx/")).map(str::to_string).collect()
    }
}

fn client_version(client: &Path) -> Option<String> {
    let out = Command::new(client).args(["version", "--format", "{{.Client.Version}}"]).output().ok()?;
    out.status.success().then(|| stdout(&out))
}

/// Debian's docker (both builders; required), then every other docker client on PATH
/// of another version (classic builder).
fn builders() -> Vec<Builder> {
    let debian = PathBuf::from("/usr/bin/docker");
    let Some(version) = client_version(&debian) else {
        panic!("/usr/bin/docker (Debian's docker.io) does not run; install it (ci/services.sh)");
    };
    let mut all = vec![
        Builder { client: debian.clone(), buildkit: false, version: version.clone() },
        Builder { client: debian.clone(), buildkit: true, version: version.clone() },
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let client = dir.join("docker");
        let Some(v) = client_version(&client) else { continue };
        if all.iter().all(|b| b.version != v) {
            all.push(Builder { client, buildkit: false, version: v });
        }
    }
    all
}

/// What archfarm puts into the build context of `dir` for its `Dockerfile`.
fn archfarm_context(dir: &Path) -> BTreeSet<String> {
    let ctx =
        scan(dir, Links::InsideFolder, None).unwrap_or_else(|e| panic!("scan {}: {}", dir.display(), e.message()));
    ctx.for_recipe("Dockerfile", &["Dockerfile".to_string()]).entries.into_iter().map(|e| e.path).collect()
}

#[test]
fn the_context_is_what_docker_copies() {
    if !hub_mirror_up("dockerignore") {
        return;
    }
    let builders = builders();
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut compared = BTreeSet::new();
    // A few builds at a time: the engine builds them in parallel.
    for chunk in CASES.chunks(4) {
        let results: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|case| {
                    let dir = root.path().join(case.name);
                    std::fs::create_dir(&dir).unwrap();
                    make_context(&dir, case.ignore);
                    let builders = &builders;
                    s.spawn(move || (case.name.to_string(), compare(case, &dir, builders)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (name, problems) in results {
            compared.insert(name);
            failures.extend(problems);
        }
    }
    eprintln!(
        "compared {} ignore files with: {}",
        compared.len(),
        builders.iter().map(Builder::label).collect::<Vec<_>>().join(", ")
    );
    assert!(failures.is_empty(), "archfarm's context differs from what Docker copies:\n{}", failures.join("\n"));
}

/// The differences between archfarm's context of `case` and each builder's `COPY`.
fn compare(case: &Case, dir: &Path, builders: &[Builder]) -> Vec<String> {
    let ours = archfarm_context(dir);
    let build_files = ["Dockerfile", ".dockerignore"];
    let mut problems = Vec::new();
    for f in build_files {
        if !ours.contains(f) {
            problems.push(format!("{}: archfarm left {f} out of the context", case.name));
        }
    }
    let without = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter().filter(|p| !build_files.contains(&p.as_str())).cloned().collect()
    };
    for b in builders {
        let agrees = match case.docker_20_10 {
            Agrees::Both => true,
            Agrees::ClassicOnly => !b.buildkit,
            Agrees::Neither => false,
        };
        if !agrees && b.version.starts_with("20.10") {
            continue;
        }
        let theirs = b.copied(dir);
        let (only_ours, only_theirs) = (&without(&ours) - &without(&theirs), &without(&theirs) - &without(&ours));
        if !only_ours.is_empty() || !only_theirs.is_empty() {
            problems.push(format!(
                "{} with {}:\n  only archfarm: {only_ours:?}\n  only Docker:   {only_theirs:?}\n  .dockerignore: {:?}",
                case.name,
                b.label(),
                case.ignore
            ));
        }
    }
    problems
}
