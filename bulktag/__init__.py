"""bulktag: add tags to many cloud images, fast, politely, and resumably."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bulktag")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
