"""The DuckDB schema: the contract between the pipeline (`featureflow/pipeline/`) and the explorer
(`featureflow/explorer/`).

One `.duckdb` file per run. Models are named by their config name (`models.model`); features by
(model, feature) with `feature` the SAE latent index. Every number the explorer shows is a column
here or a query over columns. Bump SCHEMA_VERSION on any incompatible change; the app refuses a store
of another version with a message that says which.

Imported by both sides, and free of heavy imports (the app never imports torch).
"""

from __future__ import annotations

SCHEMA_VERSION = 14
# 6: the fate of a feature is no longer stored (`features.fate`, `features.emerged`, `features.depth` and the
#    `flows` table removed): it is computed at query time, at any threshold and mode, by the one fate rule in
#    `featureflow/store/flows.py` (`PERSISTS`, `edge_matches`, `feature_fates`, `flows`).
# 7: a feature's lineage is no longer stored (`features.parent_model`, `parent_feature`, `parent_r`,
#    `best_child_r`, `origin_model`, `origin_feature` removed, the default threshold's): its best parent and
#    child r, its chain of persisting parent matches and its origin are read at query time, at the page's
#    threshold and mode, through the same rule (`flows.feature_fates`, `flows.ancestry`, `flows.origins`).
# 8: random-weights controls (`controls`, `control_matches`, `control_assignments`): every parent member matched
#    against its root's untrained copy, the lower anchor of every persistence figure; `pw_mcc.kind` 'control'.
# 9: evidence kinds (`evidence_kinds`, `evidence`, `planted_evidence`): numbers per feature and edge beside the
#    matches, one registered kind per file in `featureflow/evidence/`, every kind in the same long table.
# 10: `cross_health`: how well one member's SAE reconstructs another model's activations (transfer's health).
# 13: crosscoders (`crosscoders`, `crosscoder_latents`): a crosscoder per edge beside matching, when configured.
# 14: `merge_survival_control`: each merge parent's features in its root's random-weights control, the survival
#     curves' lower anchor.

# table name -> (documentation, DDL body). Order matters only for readability.
TABLES: dict[str, tuple[str, str]] = {
    "schema_version": ("The schema version this file was written with.", """
        version INTEGER NOT NULL, created_at TIMESTAMP NOT NULL"""),
    "runs": ("The run: its config (YAML as JSON), device, and `timings_json`: {stages: seconds per stage of the "
             "process that built the store (about 0 for a stage found cached), calls: seconds per stage call, "
             "hardware: cpu, cores, gpu, python, torch}. `modes`: the "
             "matching modes stored (a similarity, optionally `-1to1` for the one-to-one rule), the first the "
             "default; `shared_init`: every SAE started from one seed (the paper's setup) instead of its own.", """
        name VARCHAR PRIMARY KEY, description VARCHAR, config_json VARCHAR, device VARCHAR,
        timings_json VARCHAR, default_threshold DOUBLE, top_k INTEGER, modes VARCHAR[], default_mode VARCHAR,
        shared_init BOOLEAN, sample_tokens BIGINT, sample_context INTEGER, hook VARCHAR, inputs_key VARCHAR"""),
    "domains": ("Corpora domains: where the text came from and how much of it.", """
        domain VARCHAR PRIMARY KEY, source VARCHAR, train_docs INTEGER, val_docs INTEGER,
        train_tokens BIGINT, val_tokens BIGINT, sample_windows INTEGER"""),
    "models": ("Family members in topological order (`idx`), with their own domains and shape.", """
        model VARCHAR PRIMARY KEY, label VARCHAR, idx INTEGER, make VARCHAR, domains VARCHAR[],
        seed INTEGER, train_tokens BIGINT, train_steps INTEGER, merge_t DOUBLE, seconds DOUBLE,
        hidden INTEGER, d_mlp INTEGER, heads INTEGER, vocab INTEGER, d_sae INTEGER"""),
    "model_edges": ("The family DAG: one row per parent -> child edge.", """
        parent VARCHAR, child VARCHAR, make VARCHAR"""),
    "model_eval": ("Each member's final validation loss / next-token accuracy on every domain.", """
        model VARCHAR, domain VARCHAR, loss DOUBLE, accuracy DOUBLE"""),
    "training_curves": ("Validation curves logged while training / fine-tuning (one row per eval and domain).", """
        model VARCHAR, step INTEGER, tokens BIGINT, lr DOUBLE, train_loss DOUBLE, domain VARCHAR,
        val_loss DOUBLE, val_accuracy DOUBLE"""),
    "slerp_meta": ("Per merged member: parents (t = 0 is parent0), chosen t, crossing t* and sweep settings.", """
        model VARCHAR PRIMARY KEY, parent0 VARCHAR, parent1 VARCHAR, t DOUBLE, t_mode VARCHAR,
        t_star DOUBLE, crossed BOOLEAN, t_grid_interpolated DOUBLE, grid_step DOUBLE, tolerance DOUBLE,
        t_direction VARCHAR, curve_domains_json VARCHAR"""),
    "slerp_curve": ("Every evaluation of the sweep: t, where it came from (grid / bisection / chosen), per domain.", """
        model VARCHAR, t DOUBLE, source VARCHAR, domain VARCHAR, loss DOUBLE, accuracy DOUBLE"""),
    "slerp_baselines": ("The root model(s) on the sweep's domains: the dashed baselines.", """
        model VARCHAR, root VARCHAR, domain VARCHAR, loss DOUBLE, accuracy DOUBLE"""),
    "sae_metrics": ("SAE health on held-out windows, for replica 0 (the SAE matched across models). `seed` is its "
                    "initialisation and batch-order seed, `replicas` how many extra seeds it has (sae_replicas). L0, MSE, explained variance and dead features over all the "
                    "domains the SAE trained on; loss recovered (and the CE figures) on the member's own domains "
                    "(`loss_recovered_scope`), since a fine-tuned model may have forgotten other domains so "
                    "thoroughly that zero-ablating its MLP helps there; `loss_recovered_all` pools every domain.", """
        model VARCHAR PRIMARY KEY, hook VARCHAR, d_in INTEGER, d_sae INTEGER, recipe VARCHAR, architecture VARCHAR,
        k INTEGER, target_l0 DOUBLE, seed BIGINT, replicas INTEGER, l1_coefficient DOUBLE, training_tokens BIGINT, l0 DOUBLE, mse DOUBLE, explained_variance DOUBLE,
        dead_features INTEGER, dead_fraction DOUBLE, ce_clean DOUBLE, ce_sae DOUBLE, ce_zero DOUBLE,
        loss_recovered DOUBLE, loss_recovered_scope VARCHAR, loss_recovered_all DOUBLE, eval_tokens BIGINT,
        seconds DOUBLE"""),
    "sae_replicas": ("Every SAE of a member, replica 0 included: its seed, final L1 coefficient and health.", """
        model VARCHAR, replica INTEGER, seed BIGINT, l1_coefficient DOUBLE, l0 DOUBLE, mse DOUBLE,
        explained_variance DOUBLE, dead_features INTEGER, loss_recovered DOUBLE"""),
    "sae_health_domains": ("SAE health per validation domain (loss recovered NULL where zero-ablation does not hurt).", """
        model VARCHAR, domain VARCHAR, l0 DOUBLE, mse DOUBLE, explained_variance DOUBLE, ce_clean DOUBLE,
        ce_sae DOUBLE, ce_zero DOUBLE, loss_recovered DOUBLE"""),
    "sae_training": ("SAE training curve.", """
        model VARCHAR, step INTEGER, tokens BIGINT, loss DOUBLE, mse DOUBLE, l1 DOUBLE, l0 DOUBLE"""),
    "vocab": ("Token id -> its text (byte-level pieces decoded; may be a partial UTF-8 character).", """
        token_id INTEGER PRIMARY KEY, text VARCHAR"""),
    "sample_tokens": ("The shared sample, one row per token: token_index = window_idx * context + position.", """
        token_index BIGINT PRIMARY KEY, window_idx INTEGER, position INTEGER, domain VARCHAR, token_id INTEGER"""),
    "features": ("One row per (model, feature): activation statistics over the shared sample. Its fate, best "
                 "parent and child matches and lineage (the chain of persisting parent matches up to its origin) "
                 "at any threshold and mode are not stored: `featureflow/store/flows.py` computes them from "
                 "`matches` / `assignments`.", """
        model VARCHAR, feature INTEGER, density DOUBLE, n_active BIGINT, max_act DOUBLE, mean_act DOUBLE,
        mean_when_active DOUBLE, alive BOOLEAN, top_token_id INTEGER, top_token_share DOUBLE, top_token_llr DOUBLE,
        PRIMARY KEY (model, feature)"""),
    "feature_histograms": ("Equal-width histogram of a feature's non-zero activations: bin edges and counts.", """
        model VARCHAR, feature INTEGER, edges DOUBLE[], counts INTEGER[], PRIMARY KEY (model, feature)"""),
    "feature_top_tokens": ("Token types a feature fires on, by total activation.", """
        model VARCHAR, feature INTEGER, rank INTEGER, token_id INTEGER, count INTEGER, mean_act DOUBLE,
        total_act DOUBLE"""),
    "feature_logits": ("A feature's direct effect on the logits, W_U (g * W_down W_dec[f]) with g the final norm's "
                       "gain (its 1/rms scale left out): the top promoted (+) and suppressed (-) tokens.", """
        model VARCHAR, feature INTEGER, sign VARCHAR, rank INTEGER, token_id INTEGER, value DOUBLE"""),
    "examples": ("Context windows [start, end) of sample token indices with the feature's value on every "
                 "token. kind: 'top' (top-activating, rank 0 = highest) or 'q<i>' (i-th equal-count "
                 "activation quantile from the bottom).", """
        model VARCHAR, feature INTEGER, kind VARCHAR, rank INTEGER, center BIGINT, start BIGINT,
        "end" BIGINT, acts FLOAT[]"""),
    "activation_values": ("Every non-zero SAE activation on the shared sample (sparse), sorted by model and "
                          "feature so per-feature reads touch few blocks. Lets the explorer show any feature on any "
                          "context and recompute a correlation exactly.", """
        model VARCHAR, feature INTEGER, token_index BIGINT, act FLOAT"""),
    "matches": ("Top-k matches per edge and similarity ('pearson': activations over sample positions; 'decoder': "
                "cosine of decoder directions; 'token-type': per-token-type means). direction 'p2c': src is a "
                "parent feature, dst a child feature; 'c2p' the reverse. rank 0 is the best match (the "
                "'best' rule). `r` is the similarity.", """
        similarity VARCHAR, parent VARCHAR, child VARCHAR, direction VARCHAR, src INTEGER, rank INTEGER,
        dst INTEGER, r DOUBLE"""),
    "assignments": ("The '1to1' rule: a one-to-one assignment of maximum total similarity per edge and "
                    "similarity, over the top-k candidates of both directions. One row per feature on each side; "
                    "dst and r are NULL where a feature is left unassigned.", """
        similarity VARCHAR, parent VARCHAR, child VARCHAR, direction VARCHAR, src INTEGER, dst INTEGER,
        r DOUBLE"""),
    "noise_floor": ("The seed-control noise floor: replica 0 of a member's SAE matched against replica `replica` "
                    "(same model, another seed) with the same engine, per similarity and rule. One row per "
                    "feature of replica 0: its match r in the other replica (NULL: unassigned under 1to1). "
                    "The floor at a threshold t is the share of alive features with r > t: what 'persistence' "
                    "reads between two SAEs of one unchanged model. A feature's seed stability at t under a "
                    "mode is read from its rows here (`featureflow/store/flows.py` `stability`): the share of "
                    "its member's other replicas in which r > t, and its mean r (unassigned counts 0); it is "
                    "*reproducible* (stable) when r > t in every other replica.", """
        model VARCHAR, replica INTEGER, similarity VARCHAR, rule VARCHAR, feature INTEGER, alive BOOLEAN,
        r DOUBLE"""),
    "controls": ("Random-weights controls (`controls:` in the config): a root's architecture and tokenizer with the "
                 "architecture's own random initialisation from `seed` and no training, and its own SAE (replica 0's "
                 "health here). Not members of the family: no Sankey column, no lineage. Every member that is a parent "
                 "on some edge is matched against its root's control (`control_matches`), the lower anchor of every "
                 "persistence figure: what token identity alone 'persists'.", """
        control VARCHAR PRIMARY KEY, root VARCHAR, label VARCHAR, seed BIGINT, init VARCHAR, d_sae INTEGER,
        sae_seed BIGINT, replicas INTEGER, l0 DOUBLE, mse DOUBLE, explained_variance DOUBLE, dead_features INTEGER,
        alive INTEGER"""),
    "control_matches": ("Top-k matches of a parent member's features (`parent`) against its root's control "
                        "(`child`), per similarity, in the layout of `matches` (direction 'p2c': src a member "
                        "feature, dst a control feature; 'c2p' the reverse). A member feature whose best match "
                        "here exceeds the threshold is token-level.", """
        similarity VARCHAR, parent VARCHAR, child VARCHAR, direction VARCHAR, src INTEGER, rank INTEGER,
        dst INTEGER, r DOUBLE"""),
    "control_assignments": ("The '1to1' rule against the control, in the layout of `assignments`.", """
        similarity VARCHAR, parent VARCHAR, child VARCHAR, direction VARCHAR, src INTEGER, dst INTEGER,
        r DOUBLE"""),
    "explanations": ("One explanation per explained feature with its scores, each labelled with the "
                     "explainer / simulator that made it (offline ones start with 'offline-') and the scale of "
                     "each score. status: ok / failed / skipped (spend limit), with the reason.", """
        model VARCHAR, feature INTEGER, explainer VARCHAR, simulator VARCHAR, explanation VARCHAR,
        explanation_json VARCHAR, sim_score DOUBLE, detection_score DOUBLE, sim_scale VARCHAR,
        detection_scale VARCHAR, quantisation VARCHAR, n_explain INTEGER, n_score INTEGER, status VARCHAR,
        reason VARCHAR, PRIMARY KEY (model, feature)"""),
    "autointerp_spend": ("Per model: LLM calls (and cache hits), tokens and USD spent by autointerp.", """
        model VARCHAR, mode VARCHAR, llm_model VARCHAR, calls INTEGER, cached_calls INTEGER,
        prompt_tokens BIGINT, completion_tokens BIGINT, usd DOUBLE"""),
    "cases": ("Case studies found by the pipeline: a token hypothesis or a named feature and its root feature "
              "(for a token: the root feature's LLR and the share of the token's occurrences it fires on). "
              "`descendants`: the only models the case follows into (NULL: all). Its hops are not stored: "
              "they are the root feature's lineage at the page's threshold and matching mode.", """
        slug VARCHAR PRIMARY KEY, title VARCHAR, description VARCHAR, hypothesis VARCHAR, root_model VARCHAR,
        root_feature INTEGER, root_llr DOUBLE, root_coverage DOUBLE, descendants VARCHAR[], status VARCHAR,
        reason VARCHAR"""),
    "case_llrs": ("Per token case, every model's features with a finite LLR log P(s | feature) / P(s) for the "
                  "case's token; a feature without a row never fires on the token.", """
        slug VARCHAR, model VARCHAR, feature INTEGER, llr DOUBLE, PRIMARY KEY (slug, model, feature)"""),
    "fingerprints": ("Delta Activations: per entity (a member, a pool member or a SLERP sweep point) and "
                     "variant, its shift against its base on the probes. delta-hidden: final hidden state after "
                     "the final norm at the last token; delta-mlp: mean hook_post over probe tokens; "
                     "delta-logits: mean next-token log-probabilities.", """
        entity VARCHAR, kind VARCHAR, model VARCHAR, t DOUBLE, base VARCHAR, label VARCHAR, variant VARCHAR,
        norm DOUBLE, vector DOUBLE[]"""),
    "fingerprint_similarity": ("Cosine similarity between fingerprints of members and pool members.", """
        variant VARCHAR, a VARCHAR, b VARCHAR, cos DOUBLE"""),
    "fingerprint_neighbours": ("Each entity's nearest others by cosine similarity.", """
        variant VARCHAR, entity VARCHAR, rank INTEGER, other VARCHAR, cos DOUBLE"""),
    "fingerprint_map": ("2-D maps of the fingerprints: method 'pca' always, 'tsne' (cosine) when there are at "
                        "least 20 fingerprints.", """
        variant VARCHAR, method VARCHAR, entity VARCHAR, x DOUBLE, y DOUBLE"""),
    "fingerprint_stats": ("Clustering quality per variant: silhouette on cosine distance with domain labels.", """
        variant VARCHAR, silhouette DOUBLE, n INTEGER, n_labels INTEGER, pca_var1 DOUBLE, pca_var2 DOUBLE,
        convention VARCHAR"""),
    "fingerprint_probe_counts": ("How the map changes with the number of probes (1, 2, 4, all).", """
        variant VARCHAR, k INTEGER, silhouette DOUBLE, mean_cos_to_all DOUBLE"""),
    "fingerprint_additivity": ("Along each SLERP sweep: delta(merge at t) against (1 - t) d0 + t d1 and d0 + d1.", """
        model VARCHAR, t DOUBLE, variant VARCHAR, cos_interp DOUBLE, rel_norm_interp DOUBLE, cos_sum DOUBLE,
        rel_norm_sum DOUBLE"""),
    "fingerprint_features": ("Base-SAE features behind a member's fingerprint: the base's and the child's "
                             "activations encoded with the base's SAE over the shared sample, ranked by the "
                             "change in mean activation (rank_by 'mean') or firing rate ('rate').", """
        model VARCHAR, base VARCHAR, rank_by VARCHAR, rank INTEGER, feature INTEGER, base_mean DOUBLE,
        child_mean DOUBLE, delta_mean DOUBLE, base_rate DOUBLE, child_rate DOUBLE, delta_rate DOUBLE"""),
    "pw_mcc": ("Decoder agreement as the literature measures it: PW-MCC (Song et al. 2025), the mean |cos| of "
               "unit-normalised decoder rows under the one-to-one (Hungarian) pairing that maximises it, and "
               "`chance`: the same for random unit vectors of the same shapes (drawn with `seed`). `kind` "
               "'edge': parent and child replica 0; 'replica': replica 0 of a member against its replica "
               "`replica_b`; 'control': a parent member against its root's random-weights control. `n_a`, `n_b`: decoder rows on each side; NULL scores: decoders of different "
               "widths.", """
        kind VARCHAR, model_a VARCHAR, replica_a INTEGER, model_b VARCHAR, replica_b INTEGER, n_a INTEGER,
        n_b INTEGER, pw_mcc DOUBLE, chance DOUBLE, seed BIGINT"""),
    "evidence_kinds": ("The evidence kinds this run computed (`matching.evidence`; one registered object each in "
                       "`featureflow/evidence/`): label, the side of the edge whose features its rows describe "
                       "('parent' or 'child'), what it read, and its measures as JSON [{name, label, doc, feature (its value is "
                       "a feature id of the other side), count (a whole number)}].", """
        kind VARCHAR PRIMARY KEY, label VARCHAR, side VARCHAR, reads VARCHAR[], measures_json VARCHAR, doc VARCHAR"""),
    "evidence": ("Every evidence kind's numbers, one row per (kind, edge, feature of the kind's side, measure): "
                 "`feature` is the parent's feature for a parent-side kind, the child's for a child-side one; NULL "
                 "values (NaN when computed: nothing to say, e.g. a dead feature) are left out.", """
        kind VARCHAR, parent VARCHAR, child VARCHAR, feature INTEGER, measure VARCHAR, value DOUBLE"""),
    "merge_survival": ("Features along a merge's interpolation path (featureflow/pipeline/survival.py): for each merge "
                       "member (`model`), parent and sweep point t, each parent feature's survival r: the Pearson r "
                       "between its activations from the parent's SAE on the parent and on the merged model at t, "
                       "over the first `merge.survival_tokens` tokens of the shared sample. NaN (a feature that "
                       "never fires there) is left out. At the parent's own end of the path (t = 0 for the first "
                       "parent, 1 for the second) the merge is the parent and r = 1.", """
        model VARCHAR, parent VARCHAR, t DOUBLE, feature INTEGER, r DOUBLE"""),
    "merge_survival_control": ("The survival curves' lower anchor (featureflow/pipeline/survival.py): for each merge "
                               "member (`model`) and parent, each parent feature's survival r into the parent's "
                               "random-weights control (`control`, its root's untrained copy) in place of the merged "
                               "model, over the same tokens as `merge_survival`: what token identity alone keeps. "
                               "NaN left out; none without controls.", """
        model VARCHAR, parent VARCHAR, control VARCHAR, feature INTEGER, r DOUBLE"""),
    "crosscoders": ("A crosscoder per edge (featureflow/pipeline/crosscoder.py; none unless the config has "
                    "`crosscoder:`): one dictionary read from and written to the parent's and the child's activations "
                    "at the same token. Its architecture, latents, L0 and the explained variance / MSE of each model's "
                    "reconstruction over the `tokens` of the shared sample its latents are measured on; the rule "
                    "(`exclusive_below`, `scaling`) and the calls it gave.", """
        parent VARCHAR, child VARCHAR, architecture VARCHAR, latents INTEGER, tokens INTEGER, l0 DOUBLE,
        ev_parent DOUBLE, ev_child DOUBLE, mse_parent DOUBLE, mse_child DOUBLE, exclusive_below DOUBLE,
        scaling BOOLEAN, shared INTEGER, parent_only INTEGER, child_only INTEGER, dead INTEGER, seed BIGINT,
        seconds DOUBLE"""),
    "crosscoder_latents": ("Every latent of an edge's crosscoder: its decoder norm in each model, the relative norm "
                           "`rho` = norm_child / (norm_parent + norm_child) (Lindsey et al.: 0 parent-only, 1 "
                           "child-only), the cosine between its two directions, its firing rate and largest "
                           "activation on the shared sample, Latent Scaling's ratios `nu_r` / `nu_e` (Minder et al.: "
                           "the weaker model's least-squares scale of the latent's direction over the stronger's, for "
                           "the reconstruction and for the error; near 0 when the weaker model does not carry it), "
                           "its `call` (shared / parent-only / child-only / dead, by `crosscoders.exclusive_below` and, "
                           "with `scaling`, Latent Scaling), its five top tokens (flat indices into the shared sample, "
                           "`sample_tokens.token_index`; -1: fewer firings) and its best-matching SAE feature in each "
                           "model by activation Pearson (`parent_feature`, `parent_r`, `child_feature`, `child_r`).", """
        parent VARCHAR, child VARCHAR, latent INTEGER, norm_parent DOUBLE, norm_child DOUBLE, rho DOUBLE,
        cos DOUBLE, fire_rate DOUBLE, max_act DOUBLE, nu_r DOUBLE, nu_e DOUBLE, call VARCHAR,
        parent_feature INTEGER, parent_r DOUBLE, child_feature INTEGER, child_r DOUBLE, top_tokens BIGINT[]"""),
    "cross_health": ("One member's SAE (`sae_of`, replica) on another model's activations over the shared sample "
                     "(`data_of`: a child, a parent or a random-weights control), the encode transfer evidence "
                     "reads: explained variance (1 - squared error / total variance about the mean), MSE per "
                     "element, L0 (latents firing per token) and the rows encoded. Beside `sae_metrics` of "
                     "`data_of`'s own SAE.", """
        sae_of VARCHAR, replica INTEGER, data_of VARCHAR, explained_variance DOUBLE, mse DOUBLE, l0 DOUBLE,
        rows BIGINT"""),
    "planted_scores": ("The planted-family scorecard (`featureflow/pipeline/planted.py`; empty when the run config has "
                       "no `planted` section): per matching mode, population ('all' alive latents, or 'reproducible': "
                       "replica 0 matched above the threshold in every other replica) and fate (persisting / disappearing of "
                       "parent latents, inherited / emerging of child latents, over every planted edge), the calls "
                       "made, how many were right (`correct`), the latents whose planted truth is that fate "
                       "(`support`), precision = correct / calls, recall = correct / support and F1 (NULL when "
                       "undefined). Latents of split features are left out of these four fates.", """
        mode VARCHAR, population VARCHAR, fate VARCHAR, calls INTEGER, correct INTEGER, support INTEGER,
        "precision" DOUBLE, recall DOUBLE, f1 DOUBLE"""),
    "planted_calls": ("Planted family: each mode's calls of a fate broken down by the called latents' planted truth "
                      "(persisting, disappearing, inherited, emerging, or 'unresolved': no true feature), per "
                      "population: what the wrong calls were.", """
        mode VARCHAR, population VARCHAR, fate VARCHAR, truth VARCHAR, n INTEGER"""),
    "planted_drift": ("Planted family: recall of persisting parent latents by the angle (degrees, to 5) their true "
                      "direction moved along the edge; 0 is unchanged.", """
        mode VARCHAR, angle DOUBLE, recall DOUBLE, support INTEGER"""),
    "planted_split": ("Planted family: split calls (the `split` evidence, `flows.FATE`) per mode and population (all "
                      "alive parent latents or reproducible ones): `support` latents of planted split features, "
                      "`calls` latents called split, `correct` calls on planted splits, precision and recall, "
                      "`with_halves` right calls whose parts are the latents of both planted halves, and how many "
                      "planted-split latents were called persisting or disappearing instead.", """
        mode VARCHAR, population VARCHAR, support INTEGER, calls INTEGER, correct INTEGER, "precision" DOUBLE,
        recall DOUBLE, with_halves INTEGER, called_persisting INTEGER, called_disappearing INTEGER"""),
    "planted_saes": ("Planted family: every SAE (member, replica) with its MCC against the member's true dictionary "
                     "(Hungarian on decoder vs dictionary |cos|), L0 and explained variance on the shared sample, "
                     "dead latents, true features and latents resolved to one (|cos| >= truth_min_cos).", """
        model VARCHAR, replica INTEGER, mcc DOUBLE, l0 DOUBLE, explained_variance DOUBLE, dead INTEGER,
        d_sae INTEGER, true_features INTEGER, resolved INTEGER"""),
    "planted_evidence": ("The planted scorecard of every evidence kind with a `score`: per kind and planted edge, "
                         "each metric the kind reports against the planted truth (e.g. transfer's ROC AUC separating "
                         "persisting from disappearing parent features).", """
        kind VARCHAR, parent VARCHAR, child VARCHAR, metric VARCHAR, value DOUBLE"""),
    "planted_meta": ("Planted family: its config (with the SAE recipe and matching it ran with), the threshold, the "
                     "planted edits per edge (`truth_json`: edit -> n, fraction, planted share) and the wall time.", """
        config_json VARCHAR, threshold DOUBLE, truth_json VARCHAR, seconds DOUBLE"""),
}

INDEXES = [
    "CREATE INDEX idx_examples ON examples (model, feature)",
    "CREATE INDEX idx_top_tokens ON feature_top_tokens (model, feature)",
    "CREATE INDEX idx_logits ON feature_logits (model, feature)",
    "CREATE INDEX idx_matches_src ON matches (parent, child, direction, src, similarity)",
    "CREATE INDEX idx_assign_src ON assignments (parent, child, direction, src, similarity)",
    "CREATE INDEX idx_control_src ON control_matches (parent, direction, src, similarity)",
    "CREATE INDEX idx_evidence ON evidence (kind, parent, child, feature)",
]


def ddl() -> list[str]:
    return [f"CREATE TABLE {name} ({body})" for name, (_, body) in TABLES.items()] + INDEXES


def create_tables(con) -> None:
    """Every table and index of the schema on the DuckDB connection `con` (a store being built, or an in-memory
    one that the fate rules of `flows.py` read: the planted family, autointerp's choice of persisting features)."""
    for stmt in ddl():
        con.execute(stmt)


def columns(table: str) -> list[str]:
    """A table's column names, in DDL order."""
    import re

    body = " ".join(TABLES[table][1].split())
    body = re.sub(r"PRIMARY KEY \([^)]*\)", "", body)
    return [c.split()[0].strip('"') for c in body.split(",") if c.strip()]

