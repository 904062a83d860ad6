"""MedR1: build, verify, decontaminate and publish a medical reasoning dataset distilled from DeepSeek-R1."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medr1")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"


class Medr1Error(Exception):
    """An error the CLI reports as one line (file, row, field and what is wrong) and a non-zero exit."""
