"""Every probe's defaults, in one torch-free module.

The probe functions take their keyword defaults from here, and so do the task settings and the
CLI options (which must not import torch just to print ``--help``).
"""

from __future__ import annotations

#: Feature normalisations of the linear probe.
NORMALIZATIONS = ("none", "l2", "standardize")

# -- linear probe (L-BFGS logistic regression, C swept on val)
LINEAR_NORMALIZATION = "l2"
LINEAR_SEED = 0  # recorded only: the fit itself is deterministic
LINEAR_DTYPE = "float32"  # working dtype (the solver's sums and curvature history are float64)
LINEAR_TOL = 1e-6
LINEAR_MAX_ITER = 1000
LINEAR_REFIT_ON_VAL = True

# -- weighted kNN (DINOv2)
KNN_KS = (10, 20)
KNN_TEMPERATURE = 0.07
KNN_PRIMARY_K = 20  # reported as top1/top5 when among the ks, else the largest k

# -- retrieval
RETRIEVAL_METRIC = "cosine"
RETRIEVAL_MAX_MEMORY = "2GB"

# -- PGD
PGD_NORM = "linf"
PGD_STEPS = 10
PGD_TARGET = "none"
