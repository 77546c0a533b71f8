"""The DG probe's algorithms, hyper-parameter grids and defaults, in one torch-free module.

The grids follow DomainBed's hyper-parameter ranges (``hparams_registry.py``), three values
each, centred on DomainBed's defaults: GroupDRO's step size eta (1e-2), the V-REx penalty
weight (10), EQRM's quantile (0.75) and the CORAL and MMD penalty weight gamma (1). The IRM
weight takes the low end of DomainBed's range (10^-1 .. 10^5, default 100): IRMv1's penalty is
also zero at zero logits, and on a full-batch linear head weights of 10 and more pull the
logits there (CUB-sized synthetic benchmark: val and test accuracy fall with every step up in
the weight, 0.1 best).
"""

from __future__ import annotations

#: The algorithms, in the order records and tables list them.
ALGORITHMS = ("erm", "groupdro", "vrex", "irm", "eqrm", "coral", "mmd")
#: The hyper-parameter each algorithm's grid sweeps (ERM has none).
GRID_PARAMETERS = {"groupdro": "eta", "vrex": "lambda", "irm": "lambda", "eqrm": "quantile",
                   "coral": "gamma", "mmd": "gamma"}
#: Default grids, chosen among on val.
DEFAULT_GRIDS = {
    "groupdro": (0.001, 0.01, 0.1),
    "vrex": (1.0, 10.0, 100.0),
    "irm": (0.1, 1.0, 10.0),
    "eqrm": (0.5, 0.75, 0.9),
    "coral": (0.1, 1.0, 10.0),
    "mmd": (0.1, 1.0, 10.0),
}
#: Algorithms whose term compares domains (they need a domain attribute besides the class).
DOMAIN_ALGORITHMS = ("vrex", "irm", "eqrm", "coral", "mmd")
#: Algorithms that train ERM-like for ``burnin`` steps before their penalty (then Adam restarts),
#: as DomainBed's IRM, V-REx and EQRM do; the burn-in is shared by their grid values.
BURNIN_ALGORITHMS = ("vrex", "irm", "eqrm")
#: Algorithms whose penalty acts on the representation the head sees: on frozen features without
#: an adapter it is a constant with no gradient, so they train as domain-averaged ERM.
FEATURE_MATCHING = ("coral", "mmd")
#: What records and help texts say about those penalties without an adapter.
FEATURE_MATCHING_NOTE = (
    "CORAL and MMD match the distribution of the representation the classifier reads; with a "
    "linear head on frozen features that representation is fixed, so their penalty is a constant "
    "without gradient and they train as domain-averaged ERM (the penalty weight has no effect); "
    "--adapter-dim H trains a small adapter (linear H + ReLU) below the head for every algorithm "
    "and puts the penalty on its output"
)

#: How the hyper-parameter of each (algorithm, seed) is chosen: val worst-group or average acc.
SELECTIONS = ("worst_group", "average")
DG_SELECTION = "worst_group"
DG_SEEDS = 10  # MEGACOIN: 10 runs per algorithm
DG_STEPS = 200  # full-batch Adam steps
DG_BURNIN = 100  # steps before the IRM / V-REx / EQRM penalty switches on
DG_LR = 0.01  # Adam, on unit-norm features
DG_WEIGHT_DECAY = 0.0  # DomainBed's default
DG_NORMALIZATION = "l2"
DG_RESPLIT = True  # each seed redraws train / val from their union, stratified by group
#: DomainBed's Gaussian-kernel bandwidths for MMD (the kernel is their sum).
MMD_GAMMAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: MMD's kernel is computed on at most this many rows per domain at each step (seeded draw).
MMD_MAX_ROWS = 512
