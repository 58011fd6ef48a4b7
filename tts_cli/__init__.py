"""tts: test-time-scaling experiments with language models, from the shell."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("tts-cli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
