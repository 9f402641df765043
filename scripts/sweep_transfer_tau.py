"""The `+transfer` modes' thresholds (TAU and KEEP in featureflow/evidence/transfer.py) on planted families of several
shapes: for each (TAU, KEEP), precision and recall of every fate call on reproducible latents and the share left
uncertain (MIN_EVENTS as the module has it).

    python scripts/sweep_transfer_tau.py --config configs/planted.yaml
    python scripts/sweep_transfer_tau.py --config configs/planted.yaml --shape '{"seed": 1, "features": 256, "d": 48}'
    python scripts/sweep_transfer_tau.py --config configs/planted.yaml --taus 0.3 --keeps 0.4,0.5,0.6

Each (TAU, KEEP) is a rule with doubt registered here (`modes.rule_with_doubt`, as transfer.py registers its own), scored by
the planted family's own scorecard (`run_planted`) beside plain activation Pearson.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from featureflow.config import PlantedFile
from featureflow.evidence.transfer import KEEP, MIN_EVENTS
from featureflow.modes import RULES, rule_with_doubt
from featureflow.pipeline.planted import run_planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--shape", default="{}", help="JSON overriding fields of the planted section")
    ap.add_argument("--taus", default="0.2,0.3,0.4")
    ap.add_argument("--keeps", default=str(KEEP), help="transfer r above which a feature is kept (>= 1: never)")
    args = ap.parse_args()
    d = {**yaml.safe_load(Path(args.config).read_text())["planted"], **json.loads(args.shape)}
    d.pop("crosscoder", None)
    modes = ["pearson"]
    for tau in (float(x) for x in args.taus.split(",")):
        for keep in (float(x) for x in args.keeps.split(",")):
            name = f"tau{round(tau * 100):03d}keep{round(keep * 100):03d}"
            if f"best+{name}" not in RULES:
                rule_with_doubt("best", {"p2c": "transfer", "c2p": "reverse-transfer"}, tau, name,
                                f"tau {tau} keep {keep}", keep_tau=keep if keep < 1 else None,
                                min_events=MIN_EVENTS)
            modes.append(f"pearson+{name}")
    d["matching"] = {**d.get("matching", {}), "modes": modes, "evidence": None}
    card = run_planted(PlantedFile(planted=d).planted)
    fates = ("persisting", "disappearing", "inherited", "emerging")
    print("reproducible latents: " + " | ".join(f"{f} P / R" for f in fates) + " | uncertain parent / child")
    for m in modes:
        r, u = card["reproducible"][m], card.get("uncertain", {}).get(m, {}).get("reproducible")
        cells = " | ".join(f"{r[f]['precision'] or 0:.3f} / {r[f]['recall'] or 0:.3f}" for f in fates)
        print(f"{m:24s} {cells}" + (f" | {u['parent']['share']:.3f} / {u['child']['share']:.3f}" if u else ""))


if __name__ == "__main__":
    main()
