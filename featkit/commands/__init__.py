"""CLI subcommands, one module each: ``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args)``.

Commands only parse arguments, read the cache and call the pure functions in ``probes``.
"""

#: Subcommand modules, in the order ``featkit --help`` lists them.
COMMANDS = (
    "extract",
    "list",
    "info",
    "cache",
    "retrieval",
    "probe",
    "pairs",
    "zeroshot",
    "mc",
    "perturb",
    "shift",
    "embed_texts",
    "adapt",
    "run",
    "report",
    "compare",
    "demo",
)
