#!/usr/bin/env python3
"""Writes a run record of a farm run that did not happen, for the report's page tests
and benches/report.sh: archfarm's record format (src/runs/mod.rs), deterministic.

usage: synthetic_run.py IMAGES STORE

IMAGES images for linux/amd64 and linux/arm64 (2 x IMAGES jobs) in a FROM tree (each
image's parent is an earlier one), on two builders (amd-box: amd64 native, arm64
emulated, some of those with cross stages; arm-box: arm64 native) and the assembler;
every fifth job is a memo hit, one job fails in its RUN step with a log tail and an
earlier emulator fault. Writes STORE/runs/<id>.json and prints the id.
"""
import json
import pathlib
import random
import sys

T0 = 1_796_292_000_000  # 2026-12-03T10:00:00Z, in ms


def at(ms):
    import datetime
    t = datetime.datetime.fromtimestamp((T0 + ms) / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(T0 + ms) % 1000:03d}Z"


def main():
    images, store = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    rng = random.Random(images)
    ends = {}
    jobs = []
    free = {"amd-box": [0, 0], "arm-box": [0, 0], "assembler": [0]}
    failed_one = False
    for n in range(images):
        image = f"img{n:03d}"
        parent = f"img{rng.randrange(n):03d}" if n else None
        for platform in ("linux/amd64", "linux/arm64"):
            name = f"{image} {platform}"
            ready = ends.get(f"{parent} {platform}", 0)
            job = {"image": image, "platform": platform, "key": f"{n:04x}{platform[-2:]}" + "ab" * 30,
                   "digest": "sha256:" + f"{n:04x}" + "cd" * 30,
                   "parents": [f"{parent} {platform}"] if parent else [], "started_at": at(0)}
            if (n * 2 + len(jobs)) % 5 == 0:
                end = ready + 20
                job.update(outcome="cached", source="store", seconds=end / 1000, waited_for_parents=ready / 1000)
            else:
                if n % 7 == 3:
                    builder, backend, route = "assembler", "assembler", None
                elif platform == "linux/arm64" and n % 3 == 0:
                    builder, backend, route = "amd-box", "buildkit", "emulated"
                    job["cross"] = n % 2 == 0
                else:
                    builder, backend = ("amd-box", "buildkit") if platform == "linux/amd64" else ("arm-box", "buildkit")
                    route = "native"
                slots = free[builder]
                slot = min(range(len(slots)), key=lambda s: slots[s])
                working = max(ready, slots[slot])
                end = working + rng.randrange(2_000, 40_000) * (3 if route == "emulated" else 1)
                slots[slot] = end
                if route:
                    job["route"] = route
                job.update(outcome="built", source="build", builder=builder, backend=backend,
                           working_at=at(working), waited_for_parents=ready / 1000,
                           waited_for_builder=(working - ready) / 1000, bytes_pushed=rng.randrange(10**5, 10**8),
                           seconds=end / 1000)
                if not failed_one and n > images // 2 and route == "native" and backend == "buildkit":
                    failed_one = True
                    job.update(outcome="failed", stage="build", fault="recipe", failing_step="[2/3] RUN make -j2 test",
                               error=f"building {image} for {platform}: RUN make -j2 test exited with 2",
                               retries=[{"builder": "amd-box", "fault": "emulator",
                                         "error": "qemu: uncaught target signal 11 (Segmentation fault) - core dumped"}],
                               log_tail="make: *** [Makefile:12: test] Error 2\n")
                    del job["digest"]
            job["ended_at"] = at(end)
            ends[name] = end
            jobs.append(job)
    wall = max(ends.values()) + 300
    rid = "20261203T100000.000Z-1"
    record = {"format": 1, "id": rid, "archfarm": "0.1.0", "command": ["archfarm", "build", "--push"],
              "verb": "build", "started_at": at(0), "ended_at": at(wall), "wall_seconds": wall / 1000,
              "exit_code": 1, "jobs": jobs,
              "tags": [{"image": f"img{n:03d}", "tag": f"registry.example/img{n:03d}:latest",
                        "digest": "sha256:" + "ef" * 32, "platforms": ["linux/amd64", "linux/arm64"]}
                       for n in range(images)],
              "skipped": [], "errors": []}
    (store / "runs").mkdir(parents=True, exist_ok=True)
    (store / "runs" / f"{rid}.json").write_text(json.dumps(record, indent=1))
    print(rid)


if __name__ == "__main__":
    main()
