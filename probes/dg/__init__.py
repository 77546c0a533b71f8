"""Domain generalisation on frozen features: group-robust and invariance objectives trained
full-batch on a linear head (with an optional small adapter), hyper-parameters chosen on val.

Split along its jobs, each module importable on its own:

- :mod:`probes.dg.defaults`: the algorithms, their grids and every default (torch-free, so the
  CLI reads them without importing torch);
- :mod:`probes.dg.groups`: group ids from attribute columns, per-group and worst-group accuracy
  (NumPy);
- :mod:`probes.dg.objectives`: the formulas (GroupDRO's weight update, the VREx, IRM, EQRM,
  CORAL and MMD terms) as pure torch functions;
- :mod:`probes.dg.train`: the full-batch training of one algorithm over its grid;
- :mod:`probes.dg.protocol`: seeds, the validation choice of each hyper-parameter, test scores,
  :func:`~probes.dg.protocol.dg_probe` and its :class:`~probes.dg.protocol.DGResult`.
"""
