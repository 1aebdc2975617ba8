//! Attestations on a real registry: `build --push --sign` attaches an SLSA provenance and
//! an SPDX SBOM to every platform image as OCI referrers. On docker-registry 2.8 (no
//! referrers API) the test finds them through the referrers tag schema by plain HTTP,
//! verifies each DSSE envelope with securesystemslib, validates the statements with
//! in-toto-attestation (an engine build's names its engine version) and the SBOM with
//! spdx-tools; the canonical tag stays an index of
//! real platforms; `archfarm verify` checks them and refuses a swapped one; a rerun
//! writes nothing; `archfarm copy` carries them and the copy verifies.

mod common;
mod publish_support;

use std::process::Command;

use common::*;
use publish_support::*;

/// For each child digest (argv[4:]) of repository argv[2] on registry argv[1]: its
/// referrers from the tag schema index, each envelope verified with the public key
/// argv[3] (securesystemslib), its statement validated (in-toto-attestation), about that
/// digest; SBOM predicates written to files and validated with spdx-tools. Prints
/// `digest predicate-type` per attestation.
const CHECK: &str = r#"
import hashlib, json, sys, tempfile, urllib.request
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
host, repo, pub = sys.argv[1:4]
der = serialization.load_pem_public_key(open(pub, "rb").read()).public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
key = SSlibKey.from_crypto(serialization.load_pem_public_key(open(pub, "rb").read()),
                           keyid=hashlib.sha256(der).hexdigest())
def get(path, accept=None):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}")
    if accept:
        req.add_header("Accept", accept)
    return urllib.request.urlopen(req).read()
for digest in sys.argv[4:]:
    hexd = digest.split(":")[1]
    index = json.loads(get("manifests/sha256-" + hexd, "application/vnd.oci.image.index.v1+json"))
    for ref in index["manifests"]:
        if ref.get("artifactType") != "application/vnd.in-toto+json":
            continue
        manifest = json.loads(get("manifests/" + ref["digest"], "application/vnd.oci.image.manifest.v1+json"))
        assert manifest["subject"]["digest"] == digest, manifest
        [layer] = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json", layer
        env = Envelope.from_dict(json.loads(get("blobs/" + layer["digest"])))
        env.verify([key], 1)
        raw = json.loads(env.payload)
        st = Statement.copy_from_pb(json_format.ParseDict(raw, statement_pb2.Statement()))
        st.validate()
        assert st.pb.subject[0].digest["sha256"] == hexd, raw["subject"]
        ptype = st.pb.predicate_type
        assert ptype == ref["annotations"]["in-toto.io/predicate-type"], (ptype, ref)
        if ptype == "https://slsa.dev/provenance/v1":
            prov = json_format.ParseDict(raw["predicate"], provenance_pb2.Provenance())
            assert prov.run_details.builder.id and prov.build_definition.build_type
            details = raw["predicate"]["runDetails"]["builder"]
            if raw["predicate"]["buildDefinition"]["internalParameters"]["backend"] != "assembler":
                assert details["version"].get("engine"), details
        else:
            assert ptype == "https://spdx.dev/Document", ptype
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/sbom-{hexd}.spdx.json"
                with open(path, "w") as f:
                    json.dump(raw["predicate"], f)
                errors = validate_full_spdx_document(parse_file(path), "SPDX-2.3")
            assert not errors, [e.validation_message for e in errors]
        print(digest, ptype)
"#;

/// The canonical index's child digests and platforms, as skopeo reads them.
fn children(reference: &str) -> (Vec<String>, Vec<String>) {
    let index = skopeo_raw_insecure(reference);
    let ms = index["manifests"].as_array().unwrap();
    let digests = ms.iter().map(|m| m["digest"].as_str().unwrap().to_string()).collect();
    (digests, index_platforms(&index))
}

fn skopeo_raw_insecure(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo {reference}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn independently_checked(host: &str, repo: &str, public: &str, digests: &[String]) -> Vec<String> {
    let out = Command::new("python3").args(["-c", CHECK, host, repo, public]).args(digests).output().unwrap();
    assert!(out.status.success(), "independent check: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn pushed_images_carry_signed_provenance_and_sbom_as_referrers() {
    if !tools_up("attest_push")
        || !python_modules_up("attest_push", "securesystemslib, in_toto_attestation, spdx_tools")
    {
        return;
    }
    let reg = TestRegistry::start_logged();
    let repo = Repo::new("attest");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keypair(keys.path(), "k");
    let registry = format!("{}/{}", reg.addr, repo.namespace);
    let run = |args: &[&str]| repo.command(args).env("ARCHFARM_REGISTRY", &registry).output().unwrap();

    // A Dockerfile image of its own (a nonce: no engine has it, so this run builds it)
    // over a farm parent, and an assembled one.
    repo.write(
        "images/attested/Dockerfile",
        &format!("FROM archfarm.local/images/base/busybox\nRUN echo {} > /nonce\n", repo.namespace),
    );
    let out = run(&["build", "--push", "--sign", &key, "hello-assembled", "attested", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checked: Vec<&serde_json::Value> =
        built["tags"].as_array().unwrap().iter().filter(|t| t["image"] != "base/busybox").collect();
    assert_eq!(checked.len(), 2, "{built}");
    for t in checked {
        let (image, tag) = (t["image"].as_str().unwrap(), t["tag"].as_str().unwrap());
        let (digests, platforms) = children(tag);
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{image}: only real platforms in the index");
        let image_repo = format!("{}/{image}", repo.namespace);
        let mut found = independently_checked(&reg.addr, &image_repo, &public, &digests);
        found.sort();
        let mut wanted: Vec<String> = digests
            .iter()
            .flat_map(|d| [format!("{d} https://slsa.dev/provenance/v1"), format!("{d} https://spdx.dev/Document")])
            .collect();
        wanted.sort();
        assert_eq!(found, wanted, "{image}: a provenance and an SBOM per platform");

        let out = run(&["verify", tag, "--key", &public, "--json"]);
        assert!(out.status.success(), "verify {tag}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for m in report["manifests"].as_array().unwrap().iter().skip(1) {
            let att = m["checks"].as_array().unwrap().iter().find(|c| c["kind"] == "attestations").unwrap();
            assert!(att["ok"] == true && att["detail"].as_str().unwrap().contains("provenance"), "{m}");
        }
    }

    // A no-op rerun writes no attestation, signature or per-platform tag (the stitcher
    // puts the unchanged canonical index again, as every no-op `build --push` does).
    let before = reg.writes().len();
    let out = run(&["build", "--push", "--sign", &key, "hello-assembled", "attested"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let index_tags: Vec<String> = built["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap().rsplit(':').next().unwrap().to_string())
        .collect();
    let again: Vec<String> = reg.writes()[before..]
        .iter()
        .filter(|w| !index_tags.iter().any(|t| w.contains(&format!("/manifests/{t} "))))
        .map(|w| w.split('"').nth(1).unwrap_or(w).to_string())
        .collect();
    assert!(again.is_empty(), "a no-op rerun wrote {again:?}");

    // Built and pushed unsigned: its attestations are not evidence for the key, and
    // verify says so; `sign` signs the image and its attestations, once per key.
    repo.write(
        "images/unsigned/Dockerfile",
        &format!("FROM archfarm.local/images/base/busybox\nRUN echo {} > /unsigned\n", repo.namespace),
    );
    let out = run(&["build", "--push", "unsigned", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plain_tag = plain["tags"].as_array().unwrap().iter().find(|t| t["image"] == "unsigned").unwrap()["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(&["verify", &plain_tag, "--key", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("none signed by"), "{}", stderr(&out));
    let out = run(&["sign", &plain_tag, "--key", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(" 4 attestation(s) signed"), "{}", stderr(&out));
    let out = run(&["verify", &plain_tag, "--key", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = reg.writes().len();
    let out = run(&["sign", &plain_tag, "--key", &key]);
    assert!(out.status.success() && stderr(&out).contains(" 0 attestation(s) signed"), "{}", stderr(&out));
    assert_eq!(reg.writes().len(), before, "signing again writes nothing");

    // A copy to another registry carries them; the copy verifies.
    let tag = built["tags"].as_array().unwrap().iter().find(|t| t["image"] == "hello-assembled").unwrap();
    let tag = tag["tag"].as_str().unwrap();
    let other = TestRegistry::start(Auth::None);
    let copied = format!("{}/copied/hello:v1", other.addr);
    let out = run(&["copy", tag, &copied]);
    assert!(out.status.success(), "copy: {}", stderr(&out));
    let out = run(&["verify", &copied, "--key", &public]);
    assert!(out.status.success(), "verify the copy: {}", stderr(&out));
    let (digests, _) = children(&copied);
    assert_eq!(independently_checked(&other.addr, "copied/hello", &public, &digests).len(), 4);

    // Swapping an attestation between platforms is found: the amd64 statement under the
    // arm64 image's referrers.
    let image_repo = format!("{}/hello-assembled", repo.namespace);
    let (digests, _) = children(tag);
    let get = |d: &str| {
        let url = format!("http://{}/v2/{image_repo}/manifests/sha256-{}", reg.addr, d.trim_start_matches("sha256:"));
        let out = Command::new("curl")
            .args(["-sf", "-H", "Accept: application/vnd.oci.image.index.v1+json", &url])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let put = |d: &str, body: &[u8]| {
        let url = format!("http://{}/v2/{image_repo}/manifests/sha256-{}", reg.addr, d.trim_start_matches("sha256:"));
        let file = keys.path().join("index.json");
        std::fs::write(&file, body).unwrap();
        let out = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.index.v1+json"])
            .args(["--data-binary", &format!("@{}", file.display()), &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    put(&digests[1], &get(&digests[0]));
    let out = run(&["verify", tag, "--key", &public]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&digests[1]) && err.contains("is not about"), "{err}");
}
