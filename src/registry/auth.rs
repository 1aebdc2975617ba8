//! Registry credentials as users already have them, and the token flow.
//!
//! - Lookup ([`lookup`]) follows `docker`: `$DOCKER_CONFIG/config.json` (default
//!   `~/.docker/config.json`); `credHelpers[host]` first, then `credsStore`, then `auths`
//!   (`auth` = base64 `user:password`, or `username`/`password`). Helpers speak the
//!   `docker-credential-<name>` protocol: `get` with the server URL on stdin, JSON out.
//! - [`login`] stores credentials the way `docker login` does: through the configured
//!   helper if there is one (and an empty `auths` entry as a marker), else base64 in
//!   `auths`; the file is written atomically with mode 0600, other fields kept.
//! - Secrets live in [`Secret`], whose `Debug` and `Display` print `<redacted>`; no message
//!   in this module contains one, and a helper's output is never quoted in an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::support::error::{Error, Result};
use crate::support::fs::{write_atomically, WriteOptions};
use crate::support::secret::Secret;

/// Credentials for one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (basic auth, or the token realm's basic auth).
    Basic { username: String, password: Secret },
    /// An identity (refresh) token from a helper (`Username: "<token>"`): sent to the
    /// token realm as an OAuth2 refresh token.
    IdentityToken(Secret),
}

impl Credential {
    /// Where the credential came from, for messages: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Credential::Basic { username, .. } => format!("user '{username}'"),
            Credential::IdentityToken(_) => "an identity token".to_string(),
        }
    }

    /// The value of a basic `Authorization` header.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// The folder of config.json: `DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::usage("neither DOCKER_CONFIG nor HOME is set: cannot find the Docker config.json"))?;
    Ok(PathBuf::from(home).join(".docker"))
}

/// The parts of config.json archfarm reads (everything else is kept on write).
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry").field("username", &self.username).finish_non_exhaustive()
    }
}

fn read_config(path: &Path) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    // serde_json's message names a line and column, never the value that failed.
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::usage(format!("{}: invalid Docker config: {e}; fix or remove it", path.display())))
}

/// The `auths` keys that may name `host`, as Docker writes them.
fn auth_keys(host: &str) -> Vec<String> {
    let mut keys = vec![host.to_string(), format!("https://{host}"), format!("http://{host}")];
    for k in keys.clone() {
        keys.push(format!("{k}/"));
        keys.push(format!("{k}/v1/"));
        keys.push(format!("{k}/v2/"));
    }
    keys
}

/// The credentials for `host` (`host[:port]`), or `None` when the user has none.
pub fn lookup(host: &str) -> Result<Option<Credential>> {
    let dir = config_dir()?;
    let path = dir.join("config.json");
    let Some(cfg) = read_config(&path)? else { return Ok(None) };
    if let Some(helper) = cfg.cred_helpers.get(host) {
        return helper_get(helper, host);
    }
    if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
        if let Some(c) = helper_get(store, host)? {
            return Ok(Some(c));
        }
    }
    for key in auth_keys(host) {
        if let Some(entry) = cfg.auths.get(&key) {
            if let Some(c) = entry_credential(entry).map_err(|why| {
                Error::usage(format!("{}: auths[\"{key}\"]: {why}; run `archfarm login {host}` again", path.display()))
            })? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn entry_credential(e: &AuthEntry) -> std::result::Result<Option<Credential>, String> {
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(Secret::new(t))));
    }
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| "`auth` is not valid base64".to_string())?;
        let text = String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8".to_string())?;
        let (u, p) = text.split_once(':').ok_or("`auth` is not base64 of user:password")?;
        return Ok(Some(Credential::Basic { username: u.to_string(), password: Secret::new(p) }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => {
            Ok(Some(Credential::Basic { username: u.clone(), password: Secret::new(p.clone()) }))
        }
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin; (success, stdout, stderr).
fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<(bool, Vec<u8>, String)> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::usage(format!(
                "credential helper {program} (from the Docker config) cannot be run: {e}; install it or remove it \
                 from config.json"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| Error::failure(format!("credential helper {program}: {e}")))?;
    Ok((out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).to_string()))
}

/// `get` through a helper. "not found" is `None`; other failures are errors that name the
/// helper but never quote its output (it may hold the secret).
fn helper_get(helper: &str, host: &str) -> Result<Option<Credential>> {
    let (ok, stdout, stderr) = run_helper(helper, "get", host.as_bytes())?;
    let text = String::from_utf8_lossy(&stdout);
    if !ok {
        if text.to_lowercase().contains("not found") || stderr.to_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(Error::failure(format!(
            "credential helper docker-credential-{helper} failed to get credentials for {host}"
        )));
    }
    let a: HelperAnswer = serde_json::from_slice(&stdout).map_err(|_| {
        Error::failure(format!("credential helper docker-credential-{helper} answered something that is not its JSON"))
    })?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    if a.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(Secret::new(a.secret))));
    }
    Ok(Some(Credential::Basic { username: a.username, password: Secret::new(a.secret) }))
}

#[derive(Serialize)]
struct HelperStore<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// Where `login` put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In `auths` of this config.json (base64).
    File(PathBuf),
    /// Through `docker-credential-<helper>`.
    Helper(String),
}

/// Stores `username`/`password` for `host` as `docker login` does.
pub fn store(host: &str, username: &str, password: &Secret) -> Result<Stored> {
    let dir = config_dir()?;
    let path = dir.join("config.json");
    let cfg = read_config(&path)?.unwrap_or_default();
    let helper = cfg.cred_helpers.get(host).cloned().or_else(|| cfg.creds_store.clone().filter(|s| !s.is_empty()));
    let mut doc: serde_json::Value = match std::fs::read(&path) {
        Ok(t) if !t.iter().all(|b| b.is_ascii_whitespace()) => serde_json::from_slice(&t)
            .map_err(|e| Error::usage(format!("{}: invalid Docker config: {e}", path.display())))?,
        _ => serde_json::json!({}),
    };
    if !doc.is_object() {
        return Err(Error::usage(format!("{}: the Docker config is not a JSON object", path.display())));
    }
    let entry = if let Some(h) = &helper {
        let input = serde_json::to_vec(&HelperStore { server_url: host, username, secret: password.expose() })
            .expect("serializes");
        let (ok, _, _) = run_helper(h, "store", &input)?;
        if !ok {
            return Err(Error::failure(format!(
                "credential helper docker-credential-{h} failed to store credentials for {host}"
            )));
        }
        serde_json::json!({})
    } else {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
        serde_json::json!({ "auth": auth })
    };
    let auths = doc.as_object_mut().expect("checked").entry("auths").or_insert_with(|| serde_json::json!({}));
    let Some(auths) = auths.as_object_mut() else {
        return Err(Error::usage(format!("{}: `auths` is not a JSON object", path.display())));
    };
    // A credential stored through a helper must not be shadowed by an old inline one.
    auths.insert(host.to_string(), entry);
    let bytes = serde_json::to_vec_pretty(&doc).expect("serializes");
    let private = WriteOptions { mode: Some(0o600), ..Default::default() };
    write_atomically(&path, &bytes, private)?;
    Ok(match helper {
        Some(h) => Stored::Helper(h),
        None => Stored::File(path),
    })
}

// ---- the challenge flow ----

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"` (quoted values may
/// hold commas). `None` for anything else.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm").cloned().filter(|r| !r.is_empty())?,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    renew_at: std::time::Instant,
}

/// The token server's answer (`token` or `access_token`).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Per-registry authentication state: the credential (looked up on first need), the
/// challenge the registry answered with, and bearer tokens cached per scope.
pub struct Authenticator {
    host: String,
    credential: std::sync::OnceLock<std::result::Result<Option<Credential>, Error>>,
    challenge: std::sync::Mutex<Option<Challenge>>,
    tokens: std::sync::Mutex<std::collections::HashMap<String, Token>>,
    fetches: std::sync::atomic::AtomicUsize,
    /// Where the credential came from, for messages (`None`: the Docker config).
    origin: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("host", &self.host).finish_non_exhaustive()
    }
}

/// The scope strings for access to `repo` (pull, or pull+push), plus pull on a mount source.
pub fn scopes(repo: &str, push: bool, mount_from: Option<&str>) -> Vec<String> {
    let mut v = vec![format!("repository:{repo}:{}", if push { "pull,push" } else { "pull" })];
    if let Some(f) = mount_from.filter(|f| *f != repo) {
        v.push(format!("repository:{f}:pull"));
    }
    v
}

impl Authenticator {
    /// Credentials looked up from the Docker config on first need.
    pub fn new(host: &str) -> Authenticator {
        Authenticator {
            host: host.to_string(),
            credential: std::sync::OnceLock::new(),
            challenge: std::sync::Mutex::new(None),
            tokens: std::sync::Mutex::new(Default::default()),
            fetches: std::sync::atomic::AtomicUsize::new(0),
            origin: None,
        }
    }

    /// With exactly this credential (`login` checks one before storing it).
    pub fn with_credential(host: &str, credential: Option<Credential>) -> Authenticator {
        let mut a = Authenticator::new(host);
        let _ = a.credential.set(Ok(credential));
        a.origin = Some("given on the command line".to_string());
        a
    }

    pub fn credential(&self) -> Result<Option<Credential>> {
        match self.credential.get_or_init(|| lookup(&self.host)) {
            Ok(c) => Ok(c.clone()),
            Err(e) if e.kind() == crate::support::error::Kind::Usage => Err(Error::usage(e.message().to_string())),
            Err(e) => Err(Error::failure(e.message().to_string())),
        }
    }

    /// How many tokens were fetched (for tests and stats).
    pub fn token_fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Words for messages: whose credentials were used, never the secret.
    pub fn describe(&self) -> String {
        match self.credential() {
            Ok(Some(c)) => match &self.origin {
                Some(o) => format!("{} {o}", c.describe()),
                None => format!("{} from the Docker config ({})", c.describe(), config_hint()),
            },
            Ok(None) => format!("no credentials ({} has none for {})", config_hint(), self.host),
            Err(e) => e.message().to_string(),
        }
    }

    /// The `Authorization` value to send for `scopes`, if the registry has asked for one:
    /// basic credentials, or a cached token (fetched now if missing or due for renewal).
    pub async fn header(&self, client: &reqwest::Client, scopes: &[String]) -> Result<Option<String>> {
        let challenge = self.challenge.lock().unwrap().clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credential()?.and_then(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                let cached = self.tokens.lock().unwrap().get(&key).cloned();
                if let Some(t) = cached.filter(|t| std::time::Instant::now() < t.renew_at) {
                    return Ok(Some(format!("Bearer {}", t.value.expose())));
                }
                let t = self.fetch_token(client, &realm, service.as_deref(), scopes).await?;
                let h = format!("Bearer {}", t.value.expose());
                self.tokens.lock().unwrap().insert(key, t);
                Ok(Some(h))
            }
        }
    }

    /// Learns from a 401: records the challenge and drops the cached token for `scopes`
    /// (so the next [`Authenticator::header`] fetches a fresh one). `false` when the
    /// answer carries no challenge archfarm can meet.
    pub fn on_unauthorized(&self, headers: &reqwest::header::HeaderMap, scopes: &[String]) -> bool {
        let parsed = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        let Some(c) = parsed else { return false };
        *self.challenge.lock().unwrap() = Some(c);
        self.tokens.lock().unwrap().remove(&scopes.join(" "));
        true
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| Error::failure(format!("registry {}: its token realm '{realm}' is not a URL", self.host)))?;
        let credential = self.credential()?;
        let started = std::time::Instant::now();
        let what = format!("registry {}: getting a token from {}", self.host, url.origin().ascii_serialization());
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let req = match &credential {
                Some(Credential::IdentityToken(t)) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", t.expose().to_string()),
                        ("client_id", "archfarm".to_string()),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_string()));
                    }
                    if !scopes.is_empty() {
                        form.push(("scope", scopes.join(" ")));
                    }
                    // application/x-www-form-urlencoded, encoded by Url's query serializer.
                    let mut enc = reqwest::Url::parse("x:/").expect("static URL");
                    enc.query_pairs_mut().extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())));
                    client
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(enc.query().unwrap_or_default().to_string())
                }
                _ => {
                    {
                        let mut q = url.query_pairs_mut();
                        q.clear();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        for s in scopes {
                            q.append_pair("scope", s);
                        }
                    }
                    let mut req = client.get(url.clone());
                    if let Some(h) = credential.as_ref().and_then(|c| c.basic_header()) {
                        req = req.header(reqwest::header::AUTHORIZATION, sensitive(&h)?);
                    }
                    req
                }
            };
            match req.timeout(crate::support::retry::timeout()).send().await {
                Ok(r)
                    if crate::support::retry::retryable_status(r.status())
                        && attempt < crate::support::retry::attempts() =>
                {
                    tokio::time::sleep(crate::support::retry::backoff(
                        attempt,
                        crate::support::retry::retry_after(r.headers()),
                    ))
                    .await;
                }
                Ok(r) => break r,
                Err(e) if crate::support::retry::retryable_error(&e) && attempt < crate::support::retry::attempts() => {
                    tracing::debug!("{what}: attempt {attempt} failed, retrying");
                    tokio::time::sleep(crate::support::retry::backoff(attempt, None)).await;
                }
                // The error text of reqwest can carry the URL, which carries no secret here
                // (credentials travel in a header), but keep it to the cause.
                Err(e) => {
                    return Err(Error::failure(format!(
                        "{what}: {} after {attempt} attempt(s)",
                        if e.is_timeout() { "timed out".to_string() } else { "connection failed".to_string() }
                    )))
                }
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::failure(format!(
                "{what}: the token service refused {} (HTTP {status}); check the credentials, e.g. `archfarm login {}`",
                self.describe(),
                self.host
            )));
        }
        if !status.is_success() {
            return Err(Error::failure(format!("{what}: HTTP {status}")));
        }
        // The body holds the token: never quoted in an error.
        let body = resp.bytes().await.map_err(|_| Error::failure(format!("{what}: the answer was cut short")))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| Error::failure(format!("{what}: the answer is not a token document")))?;
        let value = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| Error::failure(format!("{what}: the answer holds no token")))?;
        // Renew a little before the end: a tenth of the lifetime, at most 10 s early.
        let life = std::time::Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        let margin = (life / 10).min(std::time::Duration::from_secs(10));
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(registry = %self.host, scopes = %scopes.join(" "), expires_in = life.as_secs(), "got a token");
        Ok(Token { value: Secret::new(value), renew_at: started + life - margin })
    }
}

/// An `Authorization` header value marked sensitive (the HTTP stack never shows it).
pub fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue> {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| Error::usage("credentials hold characters that cannot go in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn config_hint() -> String {
    match config_dir() {
        Ok(d) => d.join("config.json").display().to_string(),
        Err(_) => "~/.docker/config.json".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let c = Credential::Basic { username: "u".into(), password: Secret::new("hunter2") };
        let shown = format!("{c:?} {}", Secret::new("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let e = AuthEntry { auth: Some("dTpodW50ZXIy".into()), ..Default::default() };
        assert!(!format!("{e:?}").contains("dTpodW50ZXIy"));
    }

    #[test]
    fn auth_entries_decode() {
        let e = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("me:pa:ss")),
            ..Default::default()
        };
        assert_eq!(
            entry_credential(&e).unwrap(),
            Some(Credential::Basic { username: "me".into(), password: Secret::new("pa:ss") })
        );
        let e = AuthEntry { username: Some("a".into()), password: Some("b".into()), ..Default::default() };
        assert!(matches!(entry_credential(&e).unwrap(), Some(Credential::Basic { .. })));
        let e = AuthEntry { auth: Some("!!".into()), ..Default::default() };
        let err = entry_credential(&e).unwrap_err();
        assert!(!err.contains("!!"));
        assert_eq!(entry_credential(&AuthEntry::default()).unwrap(), None);
        assert!(auth_keys("r.example:5000").contains(&"https://r.example:5000/v1/".to_string()));
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(parse_challenge("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example/token\",service=\"reg\",scope=\"repository:a/b:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(
            scopes("a/b", true, Some("s/b")),
            ["repository:a/b:pull,push".to_string(), "repository:s/b:pull".to_string()]
        );
    }
}
