"""The positive control at any scale: a member loaded twice (its own checkpoint as its child, nothing changed but the
child SAE's seed and token draw) must read inside its seed floor, with no verdict, in every mode and threshold.

    python scripts/positive_control.py --config configs/demo.yaml --member babypython

Runs a family of two members beside the config's run: `member` (reusing its run's artefacts through a symlink in a
scratch data folder, so only the twin's SAE, activations and matching are new) and `twin`, a `load` member of its
model folder with `member` as its parent; `member` keeps its seed replicas, the twin has none. Prints, per mode and
threshold, reproducible persistence into the twin against the seed floor and the random-weights control read on the
same features (`flows.reproducible`), whether it lies inside the floor's interval and whether the report would print a
verdict; exits 1 if any mode and threshold gives a verdict. tests/test_controls.py does the same on the tiny config.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import duckdb
import yaml

from featureflow.config import parse_config
from featureflow.pipeline.runner import Pipeline, setup_logging
from featureflow.store import flows as F


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--member", required=True, help="a member with seed replicas (its twin joins as its child)")
    ap.add_argument("--data-dir", default="/tmp/featureflow-positive-control", help="scratch folder")
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9")
    args = ap.parse_args()
    setup_logging(False)
    d = yaml.safe_load(Path(args.config).read_text())
    base = Pipeline(parse_config(d))
    scratch = Path(args.data_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / d["name"]
    if not link.exists():
        os.symlink(base.root.resolve(), link)  # the config's run: every artefact of `member` is reused
    member = next(m for m in d["family"] if m["name"] == args.member)
    replicas = parse_config(d).sae_replicas().get(args.member, 0)
    if not replicas:
        sys.exit(f"{args.member} has no seed replicas in {args.config}: no floor to read the twin against")
    d2 = {**d, "data_dir": str(scratch), "cases": [], "fingerprints": {"pool": {"per_domain": 0}},
          "family": [{k: v for k, v in member.items() if k != "parents"} | {"parents": []},
                     {"name": "twin", "label": f"{member.get('label', args.member)} again", "make": "load",
                      "path": str(base.member(args.member)), "parents": [args.member]}],
          "sae": {**d.get("sae", {}), "replicas": {args.member: replicas, "twin": 0}}}
    if member.get("parents"):
        sys.exit(f"{args.member} is not a root of {args.config}: use a root (its artefacts are reused as they are)")
    pl = Pipeline(parse_config(d2))
    t0 = time.time()
    pl.run()
    print(f"twin family built in {time.time() - t0:.0f} s ({pl.cfg.store_path()})")
    con = duckdb.connect(str(pl.cfg.store_path()), read_only=True)
    verdicts = 0
    print(f"{'mode':14s} {'thr':>4s}  {'persist [95% CI]':>22s}  {'floor [95% CI]':>22s}  {'control':>7s}  {'n':>5s}  "
          f"inside  verdict")
    for mode in pl.cfg.matching.modes:
        for t in (float(x) for x in args.thresholds.split(",")):
            r = F.reproducible(con, t, mode)[(args.member, "twin")]
            if not r["stable_parent"]:
                print(f"{mode:14s} {t:4.2f}  no reproducible feature")
                continue
            inside = r["repro_floor_lo"] <= r["repro_share"] <= r["repro_floor_hi"]
            verdicts += r["verdict_floor"] is not None
            print(f"{mode:14s} {t:4.2f}  {r['repro_share']:6.3f} [{r['repro_lo']:.3f}, {r['repro_hi']:.3f}]  "
                  f"{r['repro_floor_share']:6.3f} [{r['repro_floor_lo']:.3f}, {r['repro_floor_hi']:.3f}]  "
                  f"{r['repro_control_share']:7.3f}  {r['stable_parent']:5d}  {str(inside):6s}  "
                  f"{r['verdict_floor'] or 'none'}")
    con.close()
    print(f"{verdicts} verdict(s) against the floor")
    return 1 if verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
