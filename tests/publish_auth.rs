//! Credentials on real registries: a docker-registry with htpasswd basic auth and one with
//! token auth (a token issuer in this process), both started by the test on their own
//! loopback ports. Credentials come from a config.json under DOCKER_CONFIG, from
//! `archfarm login`, or through a credential helper; wrong ones fail clearly (exit 1, the
//! registry named) and no secret is ever printed, even with -v.

mod common;
mod publish_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use common::*;
use publish_support::*;

fn with_config(mut c: Command, config: &std::path::Path) -> Command {
    c.env("DOCKER_CONFIG", config).env("ARCHFARM_REGISTRY_ATTEMPTS", "2");
    c
}

/// Asserts that no form of a secret appears in `text`.
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "a secret was printed:\n{text}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{s}"));
        assert!(!text.contains(&b64), "a secret was printed (base64):\n{text}");
    }
    assert!(!text.contains("eyJ"), "something that looks like a JWT was printed:\n{text}");
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "failed:\n{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

#[test]
fn basic_auth_push_stitch_release_with_config_json_and_clear_failures() {
    if !services_up("basic_auth") || !tools_up("basic_auth") {
        return;
    }
    let reg = TestRegistry::start(Auth::Htpasswd);
    let repo = Repo::new("basic-auth");
    let registry = format!("{}/{}", reg.addr, repo.namespace);
    let good = docker_config(&reg.addr, USER, PASSWORD);
    let wrong = "Wrong-Password-4-tests";
    let bad = docker_config(&reg.addr, USER, wrong);
    let none = tempfile::tempdir().unwrap();

    // Wrong credentials: exit 1, the registry named, no secret, even with -v.
    let out =
        with_config(repo.command(&["build", "-v", "--push", "base/busybox", "--registry", &registry]), bad.path())
            .output()
            .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&reg.addr), "the registry is named: {err}");
    assert!(err.contains("401") && err.contains("archfarm login"), "{err}");
    assert_no_secret(&err, &[PASSWORD, wrong]);
    assert_no_secret(&stdout(&out), &[PASSWORD, wrong]);

    // No credentials at all: the same, saying there are none.
    let out = with_config(repo.command(&["build", "--push", "base/busybox", "--registry", &registry]), none.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no credentials"), "{}", stderr(&out));

    // Good credentials from config.json: push and stitch.
    let built = json_of(
        &with_config(
            repo.command(&["build", "-v", "--push", "base/busybox", "--registry", &registry, "--json"]),
            good.path(),
        )
        .output()
        .unwrap(),
    );
    let tag = built["tags"][0]["tag"].as_str().unwrap().to_string();
    let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{tag}")], Some(&creds()));
    assert!(ok, "{err}");
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
    assert_eq!(built["tags"][0]["digest"].as_str().unwrap(), format!("sha256:{}", sha256_hex(&raw)));

    // Release with a record; the tags point at the canonical index.
    let record = repo.path().join("release.json");
    let out = with_config(
        repo.command(&[
            "release",
            "v1.0.0",
            "base/busybox",
            "--latest",
            "--registry",
            &registry,
            "--json",
            "--record",
            record.to_str().unwrap(),
        ]),
        good.path(),
    )
    .output()
    .unwrap();
    let rel = json_of(&out);
    assert_eq!(rel, serde_json::from_slice::<serde_json::Value>(&std::fs::read(&record).unwrap()).unwrap());
    let img = &rel["images"][0];
    assert_eq!(img["image"], "base/busybox");
    assert_eq!(img["version"], "v1.0.0");
    assert_eq!(img["action"], "released");
    assert_eq!(img["digest"], built["tags"][0]["digest"]);
    assert_eq!(img["platforms"].as_array().unwrap().len(), 2);
    for t in ["v1.0.0", "latest"] {
        let r = format!("{}/base/busybox:{t}", registry);
        let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{r}")], Some(&creds()));
        assert!(ok, "{r}: {err}");
        assert_eq!(img["digest"].as_str().unwrap(), format!("sha256:{}", sha256_hex(&raw)));
    }
    let platform_digests: Vec<&str> =
        img["platforms"].as_array().unwrap().iter().map(|p| p["digest"].as_str().unwrap()).collect();
    for m in index["manifests"].as_array().unwrap() {
        assert!(platform_digests.contains(&m["digest"].as_str().unwrap()));
    }
    assert_tags_complete(&reg.addr, &format!("{}/base/busybox", repo.namespace), Some(&creds()));

    // Again: a no-op that says so.
    let out = with_config(
        repo.command(&["release", "v1.0.0", "base/busybox", "--latest", "--registry", &registry, "--json"]),
        good.path(),
    )
    .output()
    .unwrap();
    assert_eq!(json_of(&out)["images"][0]["action"], "unchanged");
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));

    // Release with wrong credentials: exit 1, registry named, nothing printed that is secret.
    let out =
        with_config(repo.command(&["release", "-v", "v1.0.1", "base/busybox", "--registry", &registry]), bad.path())
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&reg.addr));
    assert_no_secret(&format!("{}{}", stderr(&out), stdout(&out)), &[PASSWORD, wrong]);
    let (ok, _, _) = skopeo(&["inspect", "--raw", &format!("docker://{registry}/base/busybox:v1.0.1")], Some(&creds()));
    assert!(!ok, "no tag was written");
}

fn login(config: &std::path::Path, path_prefix: Option<&std::path::Path>, args: &[&str], password: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_archfarm"));
    c.arg("login").args(args).env("DOCKER_CONFIG", config).env("ARCHFARM_REGISTRY_ATTEMPTS", "2");
    c.current_dir(config);
    if let Some(p) = path_prefix {
        c.env("PATH", format!("{}:{}", p.display(), std::env::var("PATH").unwrap()));
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_stores_like_docker_login_in_the_file_or_through_a_helper() {
    if !tools_up("login") {
        return;
    }
    let reg = TestRegistry::start(Auth::Htpasswd);
    let home = tempfile::tempdir().unwrap();

    // Wrong password: exit 1, nothing stored, nothing secret printed.
    let wrong = "Not-The-Password-77";
    let out = login(home.path(), None, &[&reg.addr, "-u", USER, "--password-stdin"], wrong);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&reg.addr));
    assert_no_secret(&format!("{}{}", stderr(&out), stdout(&out)), &[wrong]);
    assert!(!home.path().join("config.json").exists());

    // The password is never an argument.
    let out = login(home.path(), None, &[&reg.addr, "-u", USER], PASSWORD);
    assert_eq!(out.status.code(), Some(2));

    // Right password: base64 in auths, mode 0600, other fields kept.
    std::fs::write(home.path().join("config.json"), r#"{"psFormat": "table {{.ID}}"}"#).unwrap();
    let out = login(home.path(), None, &[&reg.addr, "--username", USER, "--password-stdin"], PASSWORD);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secret(&format!("{}{}", stderr(&out), stdout(&out)), &[PASSWORD]);
    let file = home.path().join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc["psFormat"], "table {{.ID}}");
    let auth = doc["auths"][&reg.addr]["auth"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(auth).unwrap(),
        format!("{USER}:{PASSWORD}").as_bytes()
    );
    // And those credentials work: a missing image is a 404, not a 401.
    let out = Command::new(env!("CARGO_BIN_EXE_archfarm"))
        .args(["copy", &format!("{}/x/none:1", reg.addr), &format!("{}/x/other:1", reg.addr)])
        .env("DOCKER_CONFIG", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    // A credsStore helper (the docker-credential protocol: store/get with JSON on stdin/out).
    let helper_home = tempfile::tempdir().unwrap();
    let bin = helper_home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let vault = helper_home.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    write_exec(
        &bin.join("docker-credential-archtest"),
        &format!(
            "#!/bin/sh\nset -e\ncase \"$1\" in\n  store) cat > {v}/entry.json ;;\n  get) read server || true; \
             if [ -f {v}/entry.json ]; then cat {v}/entry.json; else echo 'credentials not found in native keychain'; \
             exit 1; fi ;;\n  erase) rm -f {v}/entry.json ;;\nesac\n",
            v = vault.display()
        ),
    );
    std::fs::write(helper_home.path().join("config.json"), r#"{"credsStore": "archtest"}"#).unwrap();
    let out = login(helper_home.path(), Some(&bin), &[&reg.addr, "-u", USER, "--password-stdin"], PASSWORD);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("docker-credential-archtest"), "{}", stderr(&out));
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(vault.join("entry.json")).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], reg.addr.as_str());
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASSWORD);
    let config = std::fs::read_to_string(helper_home.path().join("config.json")).unwrap();
    assert!(!config.contains(PASSWORD) && !config.contains("\"auth\""), "{config}");
    // The helper's credentials are used.
    let out = Command::new(env!("CARGO_BIN_EXE_archfarm"))
        .args(["copy", &format!("{}/x/none:1", reg.addr), &format!("{}/x/other:1", reg.addr)])
        .env("DOCKER_CONFIG", helper_home.path())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .current_dir(helper_home.path())
        .output()
        .unwrap();
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn token_auth_challenge_flow_with_renewal() {
    if !services_up("token_auth") || !tools_up("token_auth") {
        return;
    }
    let issuer = TokenIssuer::start();
    let reg = TestRegistry::start(Auth::Token { realm: issuer.realm.clone(), cert: issuer.cert.clone() });
    let repo = Repo::new("token-auth");
    let registry = format!("{}/{}", reg.addr, repo.namespace);
    let good = docker_config(&reg.addr, USER, PASSWORD);
    let wrong = "Wrong-Token-Pass-99";
    let bad = docker_config(&reg.addr, USER, wrong);

    // Wrong credentials: the token service refuses; exit 1, the registry named, no secret.
    let out =
        with_config(repo.command(&["build", "-v", "--push", "base/busybox", "--registry", &registry]), bad.path())
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&reg.addr) && stderr(&out).contains("token service refused"), "{}", stderr(&out));
    assert_no_secret(&format!("{}{}", stderr(&out), stdout(&out)), &[PASSWORD, wrong]);
    assert!(issuer.refused.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // Good credentials, and every scope's first token is one the registry rejects as
    // expired: the client must renew on the 401 and go on.
    issuer.stale_first.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = with_config(
        repo.command(&["build", "-v", "--push", "base/busybox", "--registry", &registry, "--json"]),
        good.path(),
    )
    .output()
    .unwrap();
    assert_no_secret(&format!("{}{}", stderr(&out), stdout(&out)), &[PASSWORD]);
    let built = json_of(&out);
    let issued = issuer.issued.lock().unwrap().clone();
    let push_scope = format!("repository:{}/base/busybox:pull,push", repo.namespace);
    assert!(issued.get(&push_scope).copied().unwrap_or(0) >= 2, "renewed after the 401: {issued:?}");
    let tag = built["tags"][0]["tag"].as_str().unwrap();
    let (ok, raw, err) = skopeo(&["inspect", "--raw", &format!("docker://{tag}")], Some(&creds()));
    assert!(ok, "{err}");
    assert_eq!(index_platforms(&serde_json::from_slice(&raw).unwrap()), ["linux/amd64", "linux/arm64"]);

    // Release through the token flow too.
    issuer.stale_first.store(false, std::sync::atomic::Ordering::Relaxed);
    let out =
        with_config(repo.command(&["release", "v2", "base/busybox", "--registry", &registry, "--json"]), good.path())
            .output()
            .unwrap();
    assert_eq!(json_of(&out)["images"][0]["action"], "released");

    // Renewal on expiry: a token that lives 1 s is cached while fresh, then fetched again.
    issuer.ttl.store(1, std::sync::atomic::Ordering::Relaxed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scope = format!("repository:{}/renewal:pull", repo.namespace);
    let count = || issuer.issued.lock().unwrap().get(&scope).copied().unwrap_or(0);
    rt.block_on(async {
        use archfarm::recipe::config::RegistryRef;
        use archfarm::registry::auth::Credential;
        use archfarm::support::secret::Secret;
        let r = RegistryRef { host: reg.addr.clone(), namespace: String::new(), insecure: true };
        let cred = Credential::Basic { username: USER.into(), password: Secret::new(PASSWORD) };
        let client = archfarm::registry::Registry::with_credential(&r, Some(cred)).unwrap();
        let repo_name = format!("{}/renewal", repo.namespace);
        let first = std::time::Instant::now();
        assert!(client.manifest_head(&repo_name, "nope").await.unwrap().is_none());
        assert_eq!(count(), 1);
        assert!(client.manifest_head(&repo_name, "nope").await.unwrap().is_none());
        if first.elapsed() < std::time::Duration::from_millis(800) {
            assert_eq!(count(), 1, "a fresh token is reused");
        }
        while first.elapsed() < std::time::Duration::from_millis(1100) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(client.manifest_head(&repo_name, "nope").await.unwrap().is_none());
        assert_eq!(count(), 2, "an expired token is renewed");
    });
}
