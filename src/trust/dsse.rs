//! DSSE (Dead Simple Signing Envelope, github.com/secure-systems-lab/dsse, protocol v1):
//! the wrapper in-toto attestations travel in. The signature covers the PAE
//! (pre-authentication encoding) of the payload type and the payload bytes, never the
//! JSON, so re-serialising an envelope cannot change what was signed.
//!
//! An envelope with no signatures is allowed (attestations written without `--sign`);
//! [`Envelope::verify`] then fails, naming that it is unsigned.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::support::error::{Error, Result};
use crate::trust::keys::{SigningKey, VerifyingKey};

/// A DSSE envelope in its JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, standard base64.
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// [`SigningKey::key_id`] of the signer; DSSE makes it optional and unauthenticated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// The ASN.1 DER ECDSA signature over the PAE, standard base64.
    pub sig: String,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in
/// ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Wraps `payload` in an envelope, signed by `key` when one is given, else unsigned.
pub fn sign(payload_type: &str, payload: &[u8], key: Option<&SigningKey>) -> Result<Envelope> {
    let signatures = match key {
        Some(k) => vec![Signature {
            keyid: k.key_id().to_string(),
            sig: STANDARD.encode(k.sign(&pae(payload_type, payload))?),
        }],
        None => Vec::new(),
    };
    Ok(Envelope { payload_type: payload_type.to_string(), payload: STANDARD.encode(payload), signatures })
}

impl Envelope {
    /// The decoded payload (unverified).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        STANDARD.decode(&self.payload).map_err(|e| Error::failure(format!("DSSE envelope: payload is not base64: {e}")))
    }

    /// The payload, when a signature by `key` verifies over it; an error saying why not
    /// (unsigned, signed by other keys only, or a signature that does not verify).
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>> {
        let payload = self.payload_bytes()?;
        if self.signatures.is_empty() {
            return Err(Error::failure("DSSE envelope is unsigned"));
        }
        let message = pae(&self.payload_type, &payload);
        // A keyid is only a hint: an empty one may still be ours.
        let candidates: Vec<&Signature> =
            self.signatures.iter().filter(|s| s.keyid.is_empty() || s.keyid == key.key_id()).collect();
        if candidates.is_empty() {
            return Err(Error::failure(format!(
                "DSSE envelope has no signature by key {} (keyid {}); it is signed by keyid(s) {}",
                key.source(),
                key.key_id(),
                self.signatures.iter().map(|s| s.keyid.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let verifies = |s: &&Signature| STANDARD.decode(&s.sig).is_ok_and(|sig| key.verify(&message, &sig));
        if candidates.iter().any(verifies) {
            Ok(payload)
        } else {
            Err(Error::failure(format!(
                "DSSE envelope's signature does not verify with key {} (payload or signature changed, or another key)",
                key.source()
            )))
        }
    }

    /// The envelope as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::tests::fresh_key;

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn signed_envelopes_verify_and_tampering_fails() {
        let key = fresh_key();
        let env = sign("application/vnd.in-toto+json", b"{\"a\":1}", Some(&key)).unwrap();
        assert_eq!(env.signatures[0].keyid, key.key_id());
        let back: Envelope = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(back.verify(key.verifying_key()).unwrap(), b"{\"a\":1}");

        let mut other_type = back.clone();
        other_type.payload_type = "text/plain".into();
        assert!(other_type.verify(key.verifying_key()).is_err(), "the type is signed too");
        let mut other_payload = back.clone();
        other_payload.payload = STANDARD.encode(b"{\"a\":2}");
        assert!(other_payload.verify(key.verifying_key()).unwrap_err().message().contains("does not verify"));
        let e = back.verify(fresh_key().verifying_key()).unwrap_err();
        assert!(e.message().contains("no signature by key"), "{}", e.message());
    }

    #[test]
    fn unsigned_envelopes_carry_the_payload_and_say_so_when_verified() {
        let env = sign("text/plain", b"x", None).unwrap();
        assert!(env.signatures.is_empty());
        assert_eq!(env.payload_bytes().unwrap(), b"x");
        assert!(env.verify(fresh_key().verifying_key()).unwrap_err().message().contains("unsigned"));
    }
}
