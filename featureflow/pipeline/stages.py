"""The stage graph's names and versions, SAE seeds, and the hardware probe: what the runner, the store
builder and the benchmarks share, in a module that imports nothing heavy (no circle through the runner)."""

from __future__ import annotations

import hashlib
from pathlib import Path

STAGES = ["corpora", "tokenizer", "models", "saes", "sample", "activations", "matching", "floors", "controls",
          "evidence", "survival", "crosscoders", "autointerp", "cases", "fingerprints", "planted", "store"]
# Bump a stage's version when its code changes what it writes: old artefacts are then rebuilt.
# activations 4: per-feature tables compiled, quantile examples seeded per feature (seed + feature).
# saes 4: a member's replicas train in one pass (tokens drawn once per member, shuffled per replica).
# autointerp 2: failure reasons are redacted (older artefacts may hold an API key a server echoed).
# matching 3, floors 2: each edge and each replica pair also gets its decoders' PW-MCC and chance level.
# matching 4, floors 3: only features that fire on the sample are matched (a dead feature gets no match).
# autointerp 3: the key is redacted in every encoding a server may echo (percent-encoded, base64, JSON-escaped,
#   split over tokens); the rerun answers from the LLM cache, whose entries are redacted again when read.
# autointerp 4: the offline explainer escapes a quote or backslash inside a quoted token (offline-token-stats-v2).
VERSIONS = {s: 1 for s in STAGES} | {"models": 3, "saes": 4, "activations": 4, "matching": 4, "floors": 3,
                                     "autointerp": 4, "cases": 2, "fingerprints": 2, "store": 9,
                                     "survival": 2}
# store 3: schema 7, no lineage columns (read at query time by store/flows.py)
# store 4: schema 8, the random-weights controls (controls, control_matches, control_assignments)
# store 5: schema 9, evidence kinds (evidence_kinds, evidence, planted_evidence)
# store 6: schema 10, cross_health (an SAE on another model's activations: its reconstruction there)
# evidence 1: every configured evidence kind (featureflow/evidence/) on every edge; its own `version` is in the key
# controls 1: a random-weights control per root (family/control.py), its SAEs, parents matched against it
# survival 1: every parent's SAE on a merge member along its interpolation path (featureflow/pipeline/survival.py)
# store 7: schema 12, merge_survival
# crosscoders 1: a crosscoder per edge (featureflow/pipeline/crosscoder.py), when the config has `crosscoder:`
# store 8: schema 13, crosscoders and crosscoder_latents
# survival 2: each parent's features in its root's random-weights control too (the curves' lower anchor)
# store 9: schema 14, merge_survival_control
# planted 1: the planted-family scorecard (featureflow/pipeline/planted.py; its own PLANTED_VERSION is in the key)


def hashed_seed(*parts) -> int:
    """A seed derived by hashing: the first 4 bytes (little-endian) of sha256 over `parts` joined by '|', masked
    to 31 bits. Every seed derived from names goes through here (an SAE's initialisation, an SAE's token draw, a
    control's initialisation); the seeds are in artefact keys, so the formula and the strings never change."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sae_seed(run_seed: int, name: str, replica: int = 0, shared_init: bool = False) -> int:
    """The seed of one SAE's initialisation and batch order, from (run seed, member, replica); one seed for
    every SAE with `shared_init` (the paper's single-seed setup)."""
    if shared_init:
        return run_seed + 17
    return hashed_seed("sae", run_seed, name, replica)


def sae_data_seed(run_seed: int, name: str, replica: int = 0, shared_init: bool = False) -> int:
    """The seed of the tokens one SAE of a member trains on: each replica draws its own blocks (two replicas
    share no token draw, as a parent's and a child's SAEs share none, so the seed floor compares like with
    like); with `shared_init` one draw for every SAE of every member (the paper's setup)."""
    if shared_init:
        return run_seed + 17
    return hashed_seed("sae-data", run_seed, name, *([replica] if replica else []))  # replica 0: the member's draw


def hardware(device: str) -> dict:
    """What the run ran on, for the store and the benchmarks: CPU model and cores, GPU, library versions."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if str(device).startswith("cuda") and torch.cuda.is_available() else None
    return {"device": str(device), "cpu": cpu, "cores": cores, "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
