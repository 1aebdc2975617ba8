//! Signing and verifying keys: ECDSA P-256, the curve cosign's key-based signatures use.
//!
//! A signing key is a PEM PKCS#8 `PRIVATE KEY` as `openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256` writes it; a verifying key is a PEM SPKI `PUBLIC KEY` as
//! `openssl pkey -pubout` writes it. `--key` names a file, or `env://NAME` for the PEM in
//! environment variable NAME (cosign's spelling, for CI secrets). cosign's own encrypted
//! format (`ENCRYPTED SIGSTORE PRIVATE KEY`) is refused with the command that converts it.
//!
//! The private key never leaves this file: [`SigningKey`]'s `Debug` prints only where it
//! came from and its key id, errors name the source but never quote its text, and nothing
//! here writes it anywhere.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
};
use sha2::{Digest, Sha256};

use crate::support::error::{Error, Result};

/// Where a key is read from: `env://NAME` or a file path.
fn read_source(spec: &str, what: &str) -> Result<String> {
    if let Some(name) = spec.strip_prefix("env://") {
        return match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(Error::usage(format!(
                "{what} env://{name}: environment variable {name} is unset or empty; set it to the PEM text of the key"
            ))),
        };
    }
    std::fs::read_to_string(spec).map_err(|e| {
        Error::usage(format!("{what} {spec}: cannot read the key file ({e}); give the path of a PEM key or env://NAME"))
    })
}

/// The one PEM block of `text`, or a usage error naming `source` (never quoting the text).
fn parse_pem(text: &str, source: &str, what: &str) -> Result<pem::Pem> {
    let blocks = pem::parse_many(text.as_bytes())
        .map_err(|_| Error::usage(format!("{what} {source}: not a PEM key (no valid -----BEGIN ...----- block)")))?;
    match <[pem::Pem; 1]>::try_from(blocks) {
        Ok([block]) => Ok(block),
        Err(v) => Err(Error::usage(format!("{what} {source}: expected one PEM block, found {}", v.len()))),
    }
}

/// The key id: lowercase hex SHA-256 of the public key's SPKI DER (the same for a signing
/// key and its public key), as DSSE's `keyid`.
fn key_id(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// An ECDSA P-256 private key. Its `Debug` names only its source and key id.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    source: String,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, keyid {}, <redacted>)", self.source, self.public.key_id)
    }
}

impl SigningKey {
    /// Reads the key named by `spec` (a file path or `env://NAME`). A missing, unreadable
    /// or wrong kind of key is a usage error (exit 2) naming `spec`.
    pub fn load(spec: &str) -> Result<SigningKey> {
        let text = read_source(spec, "signing key")?;
        SigningKey::from_pem(&text, spec)
    }

    /// Parses PEM PKCS#8 text; `source` names it in errors.
    pub fn from_pem(text: &str, source: &str) -> Result<SigningKey> {
        let what = "signing key";
        let block = parse_pem(text, source, what)?;
        match block.tag() {
            "PRIVATE KEY" => {}
            "PUBLIC KEY" => {
                return Err(Error::usage(format!(
                    "{what} {source} is a public key; signing needs the private key (PEM PRIVATE KEY)"
                )))
            }
            "EC PRIVATE KEY" => {
                return Err(Error::usage(format!(
                    "{what} {source} is a SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in \
                     {source} -out key.pem`"
                )))
            }
            t if t.starts_with("ENCRYPTED") => {
                return Err(Error::usage(format!(
                    "{what} {source} is encrypted ({t}), which archfarm does not read; use an unencrypted PKCS#8 \
                     P-256 key (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem`), kept \
                     in a CI secret and given as env://NAME"
                )))
            }
            t => return Err(Error::usage(format!("{what} {source}: PEM block is {t}, expected PRIVATE KEY"))),
        }
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, block.contents()).map_err(|_| {
            Error::usage(format!(
                "{what} {source} is not an ECDSA P-256 PKCS#8 key; make one with `openssl genpkey -algorithm EC \
                 -pkeyopt ec_paramgen_curve:P-256 -out key.pem`"
            ))
        })?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| Error::failure(format!("{what} {source}: cannot encode its public key")))?;
        let public = VerifyingKey::from_spki(spki.as_ref().to_vec(), source)?;
        Ok(SigningKey { pair, source: source.to_string(), public })
    }

    /// An ASN.1 DER ECDSA signature over SHA-256 of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::failure(format!("signing with {} failed", self.source)))?;
        Ok(sig.as_ref().to_vec())
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// [`VerifyingKey::key_id`] of the matching public key.
    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }
}

/// An ECDSA P-256 public key (SPKI).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    spki_der: Vec<u8>,
    key_id: String,
    source: String,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({}, keyid {})", self.source, self.key_id)
    }
}

impl VerifyingKey {
    /// Reads the public key named by `spec` (a file path or `env://NAME`). A private key
    /// given here is a usage error: verifying must never need the secret.
    pub fn load(spec: &str) -> Result<VerifyingKey> {
        let text = read_source(spec, "public key")?;
        VerifyingKey::from_pem(&text, spec)
    }

    /// Parses PEM SPKI text; `source` names it in errors.
    pub fn from_pem(text: &str, source: &str) -> Result<VerifyingKey> {
        let what = "public key";
        let block = parse_pem(text, source, what)?;
        match block.tag() {
            "PUBLIC KEY" => VerifyingKey::from_spki(block.contents().to_vec(), source),
            t if t.contains("PRIVATE KEY") => Err(Error::usage(format!(
                "{what} {source} is a private key; give its public key (`openssl pkey -in KEY -pubout -out key.pub`) \
                 and keep the private key out of verification"
            ))),
            t => Err(Error::usage(format!("{what} {source}: PEM block is {t}, expected PUBLIC KEY"))),
        }
    }

    fn from_spki(spki_der: Vec<u8>, source: &str) -> Result<VerifyingKey> {
        // Parsing checks that the point is on P-256; a key of another curve or kind is refused here.
        aws_lc_rs::signature::ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &spki_der).map_err(|_| {
            Error::usage(format!("public key {source} is not an ECDSA P-256 key (cosign's key-based signatures)"))
        })?;
        Ok(VerifyingKey { key_id: key_id(&spki_der), spki_der, source: source.to_string() })
    }

    /// True when `signature` (ASN.1 DER) is this key's ECDSA P-256 SHA-256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.spki_der).verify(message, signature).is_ok()
    }

    /// Lowercase hex SHA-256 of the SPKI DER.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Where the key was read from (for messages).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The key as PEM `PUBLIC KEY` (what `openssl pkey -pubout` writes).
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der.clone()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh PKCS#8 P-256 key as PEM, made by aws-lc-rs (the integration tests use openssl).
    pub(crate) fn fresh_key() -> SigningKey {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).unwrap();
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        SigningKey::from_pem(&text, "test-key").unwrap()
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_only() {
        let key = fresh_key();
        let sig = key.sign(b"payload").unwrap();
        let public = VerifyingKey::from_pem(&key.verifying_key().to_pem(), "pub").unwrap();
        assert_eq!(public.key_id(), key.key_id());
        assert!(public.verify(b"payload", &sig));
        assert!(!public.verify(b"payloaD", &sig));
        assert!(!fresh_key().verifying_key().verify(b"payload", &sig), "another key");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = fresh_key();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>") && shown.contains(key.key_id()), "{shown}");
        assert!(!shown.contains("pair") && shown.len() < 120, "{shown}");
    }

    #[test]
    fn the_wrong_kind_of_key_is_a_usage_error_naming_it() {
        let key = fresh_key();
        let public = key.verifying_key().to_pem();
        let e = SigningKey::from_pem(&public, "k.pub").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("k.pub is a public key"), "{}", e.message());
        let private = pem::encode(&pem::Pem::new("PRIVATE KEY", b"junk".to_vec()));
        let e = VerifyingKey::from_pem(&private, "k.pem").unwrap_err();
        assert!(e.exit_code() == 2 && e.message().contains("is a private key"), "{}", e.message());
        let e = SigningKey::from_pem(&private, "k.pem").unwrap_err();
        assert!(e.exit_code() == 2 && e.message().contains("not an ECDSA P-256"), "{}", e.message());
        let cosign = pem::encode(&pem::Pem::new("ENCRYPTED SIGSTORE PRIVATE KEY", b"x".to_vec()));
        let e = SigningKey::from_pem(&cosign, "cosign.key").unwrap_err();
        assert!(e.message().contains("encrypted"), "{}", e.message());
        let e = SigningKey::from_pem("not pem", "k").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = SigningKey::load("env://ARCHFARM_TEST_NO_SUCH_KEY_VAR").unwrap_err();
        assert!(e.exit_code() == 2 && e.message().contains("ARCHFARM_TEST_NO_SUCH_KEY_VAR"), "{}", e.message());
    }
}
