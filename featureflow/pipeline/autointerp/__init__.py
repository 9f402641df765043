"""Autointerp stage: explanations with honest scores for every selected feature of one model.

`explain_model` builds records from the model's sparse activations on the shared sample, explains each
feature (offline from token statistics, or with an LLM), scores the explanation on held-out windows
(simulation: pooled Pearson r; detection: balanced accuracy) and returns one row per feature, each
labelled with the explainer and scorer that made it. Failures are rows too, with their reason (redacted:
no key or key-shaped text). A refused key (401 / 403) stops the stage; `check_failures` stops it when
most features failed, with a summary of why.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from featureflow.progress import progress as tqdm  # a bar on a terminal, log lines elsewhere

from featureflow.config import AutointerpConfig
from featureflow.pipeline.autointerp import offline
from featureflow.pipeline.autointerp.llm import LLM, AutointerpError, LLMAuthError, LLMCallError, MalformedAnswer, Spend, SpendLimitReached, detect_messages, \
    explain_messages, parse_detection, parse_explanation, parse_levels, redact, simulate_messages
from featureflow.pipeline.autointerp.records import QUANTISATION, FeatureRecords, balanced_accuracy, build_records, simulation_score

log = logging.getLogger("featureflow")

SIM_SCALE = "pearson r over all held-out tokens, -1..1"
DET_SCALE = "balanced accuracy over held-out windows, 0..1 (0.5 = chance)"
MAX_FAILED_SHARE = 0.5  # more failed features than this share stops the stage (nothing is stored)


def select_features(cfg: AutointerpConfig, alive: np.ndarray, persisting: np.ndarray, seed: int) -> np.ndarray:
    """Which features to explain: all alive ones, or the persisting ones plus a random sample."""
    idx = np.flatnonzero(alive)
    if cfg.features == "all":
        return idx
    rng = np.random.default_rng(seed)
    keep = set(np.flatnonzero(alive & persisting).tolist())
    rest = np.setdiff1d(idx, np.fromiter(keep, dtype=np.int64, count=len(keep)))
    keep |= set(rng.choice(rest, size=min(cfg.random_per_model, len(rest)), replace=False).tolist())
    return np.array(sorted(keep), dtype=np.int64)


def records_for(acts: sp.csc_matrix, tokens: np.ndarray, feature: int, cfg: AutointerpConfig, seed: int):
    a, b = acts.indptr[feature], acts.indptr[feature + 1]
    return build_records(acts.indices[a:b], acts.data[a:b], tokens, feature, n_top=cfg.n_top,
                         n_quantiles=cfg.n_quantiles, per_quantile=cfg.per_quantile, length=cfg.window, seed=seed)


def _row(fr: FeatureRecords, explainer: str, simulator: str) -> dict:
    return {"feature": fr.feature, "explainer": explainer, "simulator": simulator, "explanation": None,
            "explanation_json": None, "sim_score": None, "detection_score": None, "sim_scale": SIM_SCALE,
            "detection_scale": DET_SCALE, "quantisation": QUANTISATION, "n_explain": len(fr.explain),
            "n_score": len(fr.score), "status": "ok", "reason": None}


def explain_offline(fr: FeatureRecords, vocab: list[str]) -> dict:
    import json

    row = _row(fr, offline.EXPLAINER, offline.SIMULATOR)
    text, structured = offline.explain(fr.explain, vocab)
    preds = [offline.simulate(structured, r, vocab) for r in fr.score]
    row.update(explanation=text, explanation_json=json.dumps(structured),
               sim_score=simulation_score(fr.score, preds),
               detection_score=balanced_accuracy([r.fires for r in fr.score],
                                                 [offline.detect(structured, r, vocab, p)
                                                  for r, p in zip(fr.score, preds)]))
    return row


def explain_llm(fr: FeatureRecords, vocab: list[str], llm: LLM) -> dict:
    row = _row(fr, f"llm:{llm.model}", f"llm:{llm.model}")
    try:
        text = redact(parse_explanation(llm.chat(explain_messages(fr.explain, vocab))["content"]))
        row["explanation"] = text
        preds = [parse_levels(llm.chat(simulate_messages(text, r, vocab), json_answer=True, logprobs=True),
                              len(r.token_ids)) for r in fr.score]
        row["sim_score"] = simulation_score(fr.score, preds)
        said = parse_detection(llm.chat(detect_messages(text, fr.score, vocab), json_answer=True), len(fr.score))
        row["detection_score"] = balanced_accuracy([r.fires for r in fr.score], said)
    except SpendLimitReached as e:
        row.update(status="skipped", reason=str(e))
    except MalformedAnswer as e:
        row.update(status="failed", reason=redact(f"malformed answer: {e}"))
    except LLMAuthError:
        raise  # the key was refused: the stage stops
    except Exception as e:  # an API error after the client's retries: this feature fails, the run goes on
        # redact the whole message before cutting it, so no partial key survives the cut
        said = str(e) if isinstance(e, LLMCallError) else f"{type(e).__name__}: {e}"  # the former: the API's error
        row.update(status="failed", reason=redact(said)[:300])
    return row


def check_failures(rows: list[dict], name: str) -> None:
    """Raise AutointerpError with a summary when more than MAX_FAILED_SHARE of the features failed."""
    from collections import Counter

    failed = [r for r in rows if r["status"] == "failed"]
    if not rows or len(failed) <= MAX_FAILED_SHARE * len(rows):
        return
    reasons = Counter(r["reason"] or "no reason" for r in failed).most_common(3)
    top = "; ".join(f"{n} x {reason[:160]}" for reason, n in reasons)
    raise AutointerpError(f"autointerp for model '{name}': {len(failed)} of {len(rows)} features failed, more than "
                          f"{MAX_FAILED_SHARE:.0%}, so nothing was stored (rerun to retry; answers already "
                          f"received are cached). Most common reasons: {top}")


def explain_model(acts: sp.csc_matrix, tokens: np.ndarray, vocab: list[str], features: np.ndarray,
                  cfg: AutointerpConfig, seed: int, cache_dir: Path, name: str = "") -> tuple[list[dict], dict]:
    """Rows (one per feature) and the spend record."""
    spend = Spend(cfg.max_usd, cfg.price_per_input_token, cfg.price_per_output_token)
    bar = tqdm(total=len(features), desc=f"autointerp {name}", unit="feat", dynamic_ncols=True, mininterval=1.0)
    if cfg.mode == "offline":
        rows = []
        for f in features:
            rows.append(explain_offline(records_for(acts, tokens, int(f), cfg, seed), vocab))
            bar.update(1)
        bar.close()
        return rows, {**spend.as_dict(), "mode": "offline"}
    llm = LLM(cfg.model, cfg.base_url, cache_dir, spend, cfg.max_retries, cfg.timeout, cfg.logprobs)

    def one(f: int) -> dict:
        row = explain_llm(records_for(acts, tokens, f, cfg, seed), vocab, llm)
        bar.update(1)
        bar.set_postfix(usd=f"{spend.usd:.4f}")
        return row

    with ThreadPoolExecutor(cfg.concurrency) as pool:
        futures = [pool.submit(one, int(f)) for f in features]
        try:
            rows = [fu.result() for fu in futures]
        except LLMAuthError as e:  # no feature that has not started yet will start
            for fu in futures:
                fu.cancel()
            bar.close()
            raise LLMAuthError(f"autointerp for model '{name}': {e}") from None
    bar.close()
    return rows, {**spend.as_dict(), "mode": "llm", "model": cfg.model}


# -------------------------------------------------------------------------------------------- LLR
def unigram(tokens_flat: np.ndarray, vocab_size: int) -> np.ndarray:
    return np.bincount(tokens_flat, minlength=vocab_size) / len(tokens_flat)


def llr_for_tokens(acts: sp.csc_matrix, tokens_flat: np.ndarray, token_ids: list[int], p_unigram: np.ndarray):
    """Per feature: log P(s | feature) / P(s) for the token set s (the appendix-D proxy), with
    P(s | feature) the feature's activation-weighted token distribution. -inf where it never fires on s;
    NaN for features that never fire."""
    mask = np.isin(tokens_flat, token_ids)
    on_s = np.asarray(acts[mask].sum(axis=0)).ravel()
    total = np.asarray(acts.sum(axis=0)).ravel()
    p_s = p_unigram[token_ids].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log((on_s / total) / p_s), on_s


def top_token_llr(top_token_id: np.ndarray, top_total: np.ndarray, total: np.ndarray, p_unigram: np.ndarray):
    """LLR of each feature's top token (by total activation)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log((top_total / total) / p_unigram[np.maximum(top_token_id, 0)])
    out[(top_token_id < 0) | (total <= 0)] = np.nan
    return out


def hypothesis_ids(vocab: list[str], hypothesis: str) -> list[int]:
    """Token ids whose text, stripped of surrounding whitespace, is the hypothesis (e.g. '=' -> ' =', '=')."""
    return [i for i, t in enumerate(vocab) if t.strip() == hypothesis.strip()]
