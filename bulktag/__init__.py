"""bulktag: add tags to many cloud images, fast, politely, and resumably."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Looked up on first use only: importlib.metadata costs ~30 ms, paid by every start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("bulktag")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
