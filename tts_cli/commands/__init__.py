"""The subcommands, in the order `tts --help` lists them: (command name, module, function)."""

COMMANDS = [
    ("generate", "generate", "generate"),
    ("prune", "prune", "prune"),
    ("score", "score", "score"),
    ("aggregate", "aggregate", "aggregate"),
    ("eval", "evaluate", "evaluate"),
    ("compare", "compare", "compare"),
    ("data", "data", "data"),
    ("show", "show", "show"),
    ("plot", "plot", "plot_app"),
    ("bench", "bench", "bench"),
]
