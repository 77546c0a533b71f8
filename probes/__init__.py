"""Pure analysis functions over feature arrays (retrieval, probes, perturbations): no I/O."""
