//! Test-only services for the publishing tests, all real and all on loopback:
//! extra `docker-registry` processes (anonymous, htpasswd basic auth, or token auth) with
//! their own config and storage in a temp folder; a token issuer (a tiny HTTP server in the
//! test process signing RS256 JWTs with a key whose certificate is the registry's
//! rootcertbundle, made with the `openssl` CLI); and a fault-injecting TCP proxy.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const USER: &str = "farmer";
pub const PASSWORD: &str = "s3cret-Pa55word-for-tests";

/// True when docker-registry, htpasswd, openssl and skopeo are installed; in CI their
/// absence fails the test.
pub fn tools_up(test: &str) -> bool {
    let missing: Vec<&str> = ["docker-registry", "htpasswd", "openssl", "skopeo"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {missing:?}; run ci/services.sh");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIP {msg}");
    false
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` until it is true or `secs` pass.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within {secs}s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub enum Auth {
    None,
    Htpasswd,
    /// realm URL, PEM certificate file of the issuer's key.
    Token {
        realm: String,
        cert: PathBuf,
    },
}

pub const TOKEN_SERVICE: &str = "archfarm-test-registry";
pub const TOKEN_ISSUER: &str = "archfarm-test-issuer";

/// A docker-registry process of its own; killed on drop.
pub struct TestRegistry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    pub fn start(auth: Auth) -> TestRegistry {
        TestRegistry::start_with(auth, "", false)
    }

    /// An anonymous registry that writes an access log line per request to its log, so a
    /// test can count what a client sent it ([`TestRegistry::writes`]).
    pub fn start_logged() -> TestRegistry {
        TestRegistry::start_with(Auth::None, "", true)
    }

    /// An anonymous registry that answers reads and refuses every write (docker-registry's
    /// read-only maintenance mode): a push to it fails after `/v2/` said all is well.
    pub fn start_read_only() -> TestRegistry {
        TestRegistry::start_with(Auth::None, "  maintenance:\n    readonly:\n      enabled: true\n", false)
    }

    /// `storage` is more YAML for the config's `storage:` section, indented two spaces.
    fn start_with(auth: Auth, storage: &str, access_log: bool) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd => {
                let file = dir.path().join("htpasswd");
                let out =
                    Command::new("htpasswd").args(["-Bbc", file.to_str().unwrap(), USER, PASSWORD]).output().unwrap();
                assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
                format!("auth:\n  htpasswd:\n    realm: archfarm-test\n    path: {}\n", file.display())
            }
            Auth::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
                 rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\n{storage}http:\n  addr: {addr}\n  secret: archfarm-test-secret\n{auth_yaml}",
            !access_log,
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", cfg.to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = TestRegistry { addr, dir, child };
        let url = format!("http://{}/v2/", r.addr);
        wait_until("the test registry answering /v2/", 30, || {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", &url])
                .output()
                .map(|o| matches!(String::from_utf8_lossy(&o.stdout).as_ref(), "200" | "401"))
                .unwrap_or(false)
        });
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The writing requests (PUT, POST, PATCH, DELETE) in the access log so far (a
    /// registry from [`TestRegistry::start_logged`]).
    pub fn writes(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| ["\"PUT /v2/", "\"POST /v2/", "\"PATCH /v2/", "\"DELETE /v2/"].iter().any(|m| l.contains(m)))
            .map(String::from)
            .collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DOCKER_CONFIG folder with `auths` for `host`.
pub fn docker_config(host: &str, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let doc = serde_json::json!({"auths": {host: {"auth": auth}}});
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    dir
}

/// `skopeo ARGS` with credentials; (success, stdout, stderr).
pub fn skopeo(args: &[&str], creds: Option<&str>) -> (bool, Vec<u8>, String) {
    let mut c = Command::new("skopeo");
    let (verb, rest) = args.split_first().unwrap();
    c.arg(verb);
    if let Some(cr) = creds {
        if *verb == "copy" {
            c.args(["--src-creds", cr, "--dest-creds", cr]);
        } else {
            c.args(["--creds", cr]);
        }
    }
    if *verb == "copy" {
        c.args(["--src-tls-verify=false", "--dest-tls-verify=false"]);
    } else {
        c.arg("--tls-verify=false");
    }
    let out = c.args(rest).output().unwrap();
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).to_string())
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Every tag of `repo` points at complete content: `skopeo copy --all` of each into an
/// OCI layout succeeds (which fetches and verifies every manifest and blob). Returns the tags.
pub fn assert_tags_complete(host: &str, repo: &str, creds: Option<&str>) -> Vec<String> {
    let (ok, out, err) = skopeo(&["list-tags", &format!("docker://{host}/{repo}")], creds);
    if !ok {
        assert!(
            err.contains("NAME_UNKNOWN") || err.contains("404") || err.contains("name unknown"),
            "list-tags: {err}"
        );
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let tags: Vec<String> =
        v["Tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    for t in &tags {
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, err) = skopeo(
            &["copy", "--all", &format!("docker://{host}/{repo}:{t}"), &format!("oci:{}:x", dir.path().display())],
            creds,
        );
        assert!(ok, "{host}/{repo}:{t} points at incomplete content: {err}");
    }
    tags
}

// ---- token issuer ----

/// A token server on loopback, signing RS256 JWTs with an x5c header.
pub struct TokenIssuer {
    pub realm: String,
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
    /// Tokens issued, per requested scope string ("" for none).
    pub issued: Arc<Mutex<HashMap<String, usize>>>,
    /// Requests refused (bad credentials).
    pub refused: Arc<AtomicUsize>,
    /// Seconds a token lives (expires_in and exp).
    pub ttl: Arc<AtomicU64>,
    /// When set, the first token per scope is already expired (exp far in the past) while
    /// expires_in claims it is good: the registry's 401 must make the client renew.
    pub stale_first: Arc<std::sync::atomic::AtomicBool>,
    runtime: tokio::runtime::Runtime,
}

impl TokenIssuer {
    pub fn start() -> TokenIssuer {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=archfarm-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap().stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(Mutex::new(HashMap::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let ttl = Arc::new(AtomicU64::new(300));
        let stale_first = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = IssuerState {
            key: key.clone(),
            x5c,
            issued: issued.clone(),
            refused: refused.clone(),
            ttl: ttl.clone(),
            stale_first: stale_first.clone(),
        };
        let state = Arc::new(state);
        runtime.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = serve_token(sock, &state).await;
                });
            }
        });
        TokenIssuer { realm, cert, dir, issued, refused, ttl, stale_first, runtime }
    }

    pub fn total(&self) -> usize {
        self.issued.lock().unwrap().values().sum()
    }
}

struct IssuerState {
    key: PathBuf,
    x5c: String,
    issued: Arc<Mutex<HashMap<String, usize>>>,
    refused: Arc<AtomicUsize>,
    ttl: Arc<AtomicU64>,
    stale_first: Arc<std::sync::atomic::AtomicBool>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

async fn serve_token(mut sock: TcpStream, st: &IssuerState) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let auth = head.lines().find_map(|l| {
        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim().to_string())
    });
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
    if auth.as_deref() != Some(want.as_str()) {
        st.refused.fetch_add(1, Ordering::Relaxed);
        let body = r#"{"details":"bad credentials"}"#;
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return sock.write_all(resp.as_bytes()).await;
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" => service = v,
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            _ => {}
        }
    }
    let mut access = Vec::new();
    for s in &scopes {
        let (typ, rest) = s.split_once(':').unwrap_or((s, ""));
        let (name, actions) = rest.rsplit_once(':').unwrap_or((rest, ""));
        access.push(serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
    }
    let key = scopes.join(" ");
    let n = {
        let mut m = st.issued.lock().unwrap();
        let c = m.entry(key).or_insert(0);
        *c += 1;
        *c
    };
    let ttl = st.ttl.load(Ordering::Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let exp = if n == 1 && st.stale_first.load(Ordering::Relaxed) { now - 600 } else { now + ttl };
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [st.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": USER, "aud": service, "exp": exp, "nbf": now - 700, "iat": now - 700,
        "jti": format!("{now}-{n}-{}", fastrand::u64(..)), "access": access,
    });
    let signing_input =
        format!("{}.{}", b64url(&serde_json::to_vec(&header).unwrap()), b64url(&serde_json::to_vec(&claims).unwrap()));
    let keyfile = st.key.clone();
    let input = signing_input.clone();
    let sig = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&keyfile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap().stdout
    })
    .await
    .unwrap();
    let token = format!("{signing_input}.{}", b64url(&sig));
    let body = serde_json::json!({"token": token, "expires_in": ttl, "issued_at": "2026-01-01T00:00:00Z"}).to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await
}

// ---- fault proxy ----

/// Fault rates (0..1 per new connection) and bounds.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Close with a TCP reset before forwarding anything.
    pub reset: f64,
    /// Forward, then reset after a random number of request bytes (mid-upload).
    pub cut: f64,
    /// Answer the first request with HTTP 500.
    pub http500: f64,
    /// Answer the first request with HTTP 429 and Retry-After: 1.
    pub http429: f64,
    /// Accept and say nothing for `stall_for`, then close.
    pub stall: f64,
    pub stall_for: Duration,
    /// At most this many faults in all.
    pub max_faults: usize,
    /// Faults only in the first this-long of the proxy's life.
    pub fault_window: Duration,
    /// Upstream (client -> registry) bytes per second, if throttled.
    pub throttle: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            reset: 0.0,
            cut: 0.0,
            http500: 0.0,
            http429: 0.0,
            stall: 0.0,
            stall_for: Duration::from_secs(5),
            max_faults: 0,
            fault_window: Duration::from_secs(120),
            throttle: None,
        }
    }
}

/// A TCP proxy on loopback in front of `upstream`.
pub struct FaultProxy {
    pub addr: String,
    pub faults: Arc<Mutex<Vec<&'static str>>>,
    pub bytes_up: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: &str, plan: Faults) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(Vec::new()));
        let bytes_up = Arc::new(AtomicU64::new(0));
        let (f, b, up) = (faults.clone(), bytes_up.clone(), upstream.to_string());
        let born = Instant::now();
        runtime.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let action = {
                    let mut taken = f.lock().unwrap();
                    let mut action = "pass";
                    if taken.len() < plan.max_faults && born.elapsed() < plan.fault_window {
                        let r = fastrand::f64();
                        let mut acc = 0.0;
                        for (name, rate) in [
                            ("reset", plan.reset),
                            ("cut", plan.cut),
                            ("500", plan.http500),
                            ("429", plan.http429),
                            ("stall", plan.stall),
                        ] {
                            acc += rate;
                            if r < acc {
                                action = name;
                                break;
                            }
                        }
                        if action != "pass" {
                            taken.push(action);
                        }
                    }
                    action
                };
                let (plan, b, up) = (plan.clone(), b.clone(), up.clone());
                tokio::spawn(async move {
                    let _ = handle(sock, &up, action, &plan, &b).await;
                });
            }
        });
        FaultProxy { addr, faults, bytes_up, runtime }
    }

    pub fn fault_count(&self) -> usize {
        self.faults.lock().unwrap().len()
    }
}

async fn read_head(sock: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Ok(())
}

async fn handle(
    mut sock: TcpStream,
    upstream: &str,
    action: &str,
    plan: &Faults,
    up_bytes: &AtomicU64,
) -> std::io::Result<()> {
    match action {
        "reset" => {
            // A zero linger sends a reset at once; it does not block.
            #[allow(deprecated)]
            sock.set_linger(Some(Duration::ZERO))?;
            return Ok(());
        }
        "500" | "429" => {
            read_head(&mut sock).await?;
            let resp = if action == "500" {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            } else {
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            sock.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        "stall" => {
            tokio::time::sleep(plan.stall_for).await;
            return Ok(());
        }
        _ => {}
    }
    let server = TcpStream::connect(upstream).await?;
    let cut_after = (action == "cut").then(|| fastrand::u64(200..200_000));
    let (mut cr, mut cw) = sock.into_split();
    let (mut sr, mut sw) = server.into_split();
    let throttle = plan.throttle;
    let upward = async {
        let mut buf = vec![0u8; 16 << 10];
        let mut sent = 0u64;
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return sw.shutdown().await;
            }
            if let Some(limit) = cut_after {
                if sent + n as u64 > limit {
                    return Err(std::io::Error::other("cut"));
                }
            }
            sw.write_all(&buf[..n]).await?;
            sent += n as u64;
            up_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(rate) = throttle {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
        }
    };
    let downward = async {
        tokio::io::copy(&mut sr, &mut cw).await?;
        cw.shutdown().await
    };
    let r = tokio::select! {
        r = upward => r,
        r = downward => r,
    };
    if r.is_err() {
        // Make the client see a reset rather than a clean close.
        if let Ok(s) = cw.reunite(cr) {
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    }
    Ok(())
}

/// Writes a file with mode 0755.
pub fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---- images made in a store ----

/// Unique bytes of `len`: a sha256 chain over a random seed.
pub fn unique_bytes(len: usize) -> Vec<u8> {
    use sha2::Digest;
    let mut h = sha2::Sha256::digest(format!("{}-{}", fastrand::u64(..), std::process::id()).as_bytes());
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(&h);
        h = sha2::Sha256::digest(h);
    }
    out.truncate(len);
    out
}

/// An OCI image for `arch` with `layers` gzip layers of random content, put in `store`.
pub fn make_image(
    store: &archfarm::image::store::Store,
    arch: &str,
    layers: usize,
) -> archfarm::image::oci::Descriptor {
    use archfarm::image::oci::{digest_of, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let content = unique_bytes(2000 + 7000 * i);
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("f{i}.bin"), &content[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        diff_ids.push(digest_of(&tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        descs.push(store.put_blob(OCI_LAYER_GZIP, &gz.finish().unwrap()).unwrap());
    }
    let config = serde_json::json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": [],
    });
    let config = store.put_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
    let manifest =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs});
    store.put_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap()
}
