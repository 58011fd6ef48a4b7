"""tts: test-time-scaling experiments with language models, from the shell."""
from strategies import __version__

__all__ = ["__version__"]
