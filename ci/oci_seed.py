#!/usr/bin/env python3
"""Writes two-platform busybox images (linux/amd64 + linux/arm64) as an OCI image layout,
deterministically, for the loopback registry that plays Docker Hub (ci/hub-mirror.sh).

    ci/oci_seed.py OUT_DIR SRC_DIR IMAGE...

SRC_DIR holds busybox-amd64.tar.xz and busybox-arm64.tar.xz (Debian's busybox-static
data.tar.xz, see images/base/busybox/README.md). Each IMAGE is `TAG[,TAG...][=MARKER]`:
one OCI image index named by every TAG in OUT_DIR/index.json; with MARKER, the layer
also holds /etc/archfarm-seed containing MARKER, so two images can differ by one file
(`1.31.1,latest moved=moved`). Prints `TAG DIGEST` per tag.

Same inputs, same bytes: entries sorted, mtime 0, numeric root owners, gzip with no name
and mtime 0, JSON with sorted keys. The standard library only (tarfile, gzip, json,
hashlib), so a fresh machine needs nothing but python3. The applet list comes from
running the amd64 busybox with --list (the arm64 package is the same version).
"""

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import tempfile

ARCHES = ("amd64", "arm64")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def busybox_binary(src_dir, arch):
    """The bytes of ./bin/busybox from the package's data tarball."""
    path = os.path.join(src_dir, f"busybox-{arch}.tar.xz")
    with lzma.open(path) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for member in tar:
            if member.name.lstrip("./") == "bin/busybox":
                return tar.extractfile(member).read()
    sys.exit(f"oci_seed: {path} has no ./bin/busybox; regenerate it with ci/fetch-busybox.sh")


def applets(amd64_binary):
    """The applet names the busybox build provides (`busybox --list`)."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "busybox")
        with open(exe, "wb") as f:
            f.write(amd64_binary)
        os.chmod(exe, 0o755)
        out = subprocess.run([exe, "--list"], check=True, capture_output=True, text=True).stdout
    names = sorted({n for n in out.split() if n and "/" not in n and n != "busybox"})
    if "sh" not in names:
        sys.exit("oci_seed: busybox --list does not list sh")
    return names


def entry(name, kind, mode, data=b"", target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.size = len(data)
    info.linkname = target
    return info, data


def layer(binary, names, marker):
    """(gzip bytes, diff_id) of the one layer: /bin/busybox, /bin/<applet> -> busybox."""
    entries = [
        entry("bin", tarfile.DIRTYPE, 0o755),
        entry("bin/busybox", tarfile.REGTYPE, 0o755, binary),
        entry("etc", tarfile.DIRTYPE, 0o755),
        entry("tmp", tarfile.DIRTYPE, 0o1777),
    ]
    entries += [entry(f"bin/{n}", tarfile.SYMTYPE, 0o777, target="busybox") for n in names]
    if marker is not None:
        entries.append(entry("etc/archfarm-seed", tarfile.REGTYPE, 0o644, (marker + "\n").encode()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in sorted(entries, key=lambda e: e[0].name):
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return packed.getvalue(), "sha256:" + hashlib.sha256(raw).hexdigest()


class Layout:
    """An OCI image layout being written: blobs by digest, then index.json."""

    def __init__(self, out):
        self.out = out
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type, **extra):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return dict(mediaType=media_type, digest=f"sha256:{digest}", size=len(data), **extra)

    def json_blob(self, doc, media_type, **extra):
        return self.blob(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), media_type, **extra)

    def finish(self, refs):
        with open(os.path.join(self.out, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": refs}
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump(index, f, sort_keys=True, indent=1)


def image_index(layout, binaries, names, marker):
    """The descriptor of one two-platform index."""
    manifests = []
    for arch in ARCHES:
        gz, diff_id = layer(binaries[arch], names, marker)
        layer_desc = layout.blob(gz, LAYER)
        config = {
            "architecture": arch,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": [PATH], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "archfarm ci/oci_seed.py"}],
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": layout.json_blob(config, CONFIG),
            "layers": [layer_desc],
        }
        manifests.append(layout.json_blob(manifest, MANIFEST, platform={"architecture": arch, "os": "linux"}))
    return layout.json_blob({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}, INDEX)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out, src, specs = argv[0], argv[1], argv[2:]
    binaries = {arch: busybox_binary(src, arch) for arch in ARCHES}
    names = applets(binaries["amd64"])
    layout = Layout(out)
    refs = []
    for spec in specs:
        tags, _, marker = spec.partition("=")
        desc = image_index(layout, binaries, names, marker if "=" in spec else None)
        for tag in tags.split(","):
            refs.append(dict(desc, annotations={"org.opencontainers.image.ref.name": tag}))
            print(tag, desc["digest"])
    layout.finish(refs)


if __name__ == "__main__":
    main(sys.argv[1:])
