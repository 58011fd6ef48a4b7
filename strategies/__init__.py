"""The library: the batched sampler, generators, pruners and aggregators.

Everything `tts` does can be done from here without the command-line package `tts_cli`, which
only declares options, shows progress and prints messages.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("tts-cli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
