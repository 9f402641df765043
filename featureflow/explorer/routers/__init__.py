"""The explorer's views, one APIRouter per area (`create_app` includes them in this order):

- meta: /docs, /redoc, the vendored front-end files, the favicon and /api/schema;
- flows: the overview (models, lineage, the Sankey), an edge's features, the noise floors and the method page;
- features: a feature's page and its examples, compare (and its picker), the feature search and jump;
- models: the fingerprints, a model's page and the merge sweeps;
- cases: the case studies;
- autointerp: the explanation scores;
- evidence: every evidence kind the run computed, per edge (a feature's own values are on its page).
"""
