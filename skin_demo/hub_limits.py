"""How much one Hub package may take, and the means to hold a download to it.

A hostile or broken Hub must not fill the disk or hold the app: each file and the whole package have a byte cap,
checked on the sizes the Hub declares before anything is downloaded (`check_sizes`) and on the bytes as they arrive
(`Budget`, which stands in for huggingface_hub's per-file progress bar and raises inside its download loop; the
loop then deletes its partial file). The whole download has a deadline (`run_with_deadline`): past it the transfer
stops at its next read and `remove_partial_downloads` takes its partial files out of the cache at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from skin_demo.modelpack import PackageError
from skin_demo.settings import DEFAULT_HUB_DEADLINE_S, DEFAULT_HUB_MAX_FILE_MB, DEFAULT_HUB_MAX_PACKAGE_MB

T = TypeVar("T")


class HubError(PackageError):
    """A package could not be downloaded from the Hub (unreachable, timed out, too large, missing repo/revision/file).
    The message is fit for a visitor: no server path, no URL."""


@dataclass(frozen=True)
class Limits:
    """How much one Hub package may take: bytes per file, bytes for all its files, seconds for the whole download."""

    max_file_bytes: int = int(DEFAULT_HUB_MAX_FILE_MB * 1e6)
    max_package_bytes: int = int(DEFAULT_HUB_MAX_PACKAGE_MB * 1e6)
    deadline_s: float = DEFAULT_HUB_DEADLINE_S


def check_sizes(sizes: dict[str, int | None], limits: Limits, label: str) -> None:
    """Refuse a package whose files (sizes declared by the Hub, or on disk; None: not declared) break a byte cap."""
    for name, size in sizes.items():
        if size is not None and size > limits.max_file_bytes:
            raise HubError(f"hub {label}: {name} is {size_text(size)}, over the limit of "
                           f"{size_text(limits.max_file_bytes)} per file")  # fmt: skip
    total = sum(size or 0 for size in sizes.values())
    if total > limits.max_package_bytes:
        raise HubError(f"hub {label}: the package is {size_text(total)}, over the limit of "
                       f"{size_text(limits.max_package_bytes)}")  # fmt: skip


class Budget:
    """Counts the bytes of one package as they arrive and stops the transfer (by raising inside huggingface_hub's
    download loop, which then deletes its partial file) past a cap, past a file's declared size, or once `stop` is
    set at the deadline."""

    def __init__(self, limits: Limits, stop: threading.Event, label: str) -> None:
        self.limits, self.stop, self.label = limits, stop, label
        self.received = 0
        self._lock = threading.Lock()

    def meter(self, name: str, declared: int | None) -> type:
        """A tqdm stand-in for huggingface_hub's per-file progress bar (`tqdm_class`) that charges this budget."""
        budget = self
        cap = min(self.limits.max_file_bytes, declared if declared is not None else self.limits.max_file_bytes)

        class Meter:
            def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
                self.got = initial
                if total is not None and total > cap:  # the download's own Content-Length, before its body
                    budget.refuse(name, total, cap)
                budget.charge(name, initial, initial, cap)

            def update(self, n: int | float | None = 1) -> None:
                self.got += int(n or 0)
                budget.charge(name, int(n or 0), self.got, cap)

            def __enter__(self) -> Meter:
                return self

            def __exit__(self, *exc_info: Any) -> None:
                return None

            def close(self) -> None:
                return None

        return Meter

    def charge(self, name: str, n: int, file_bytes: int, cap: int) -> None:
        if self.stop.is_set():
            raise HubError(f"hub {self.label}: download stopped at the deadline")
        with self._lock:
            self.received += n
            total = self.received
        if file_bytes > cap:
            self.refuse(name, file_bytes, cap)
        if total > self.limits.max_package_bytes:
            raise HubError(f"hub {self.label}: the package sent more than the limit of "
                           f"{size_text(self.limits.max_package_bytes)}")  # fmt: skip

    def refuse(self, name: str, size: int, cap: int) -> None:
        raise HubError(f"hub {self.label}: {name} sent more than {size_text(cap)} (its declared size, or the limit per "
                       f"file); got at least {size_text(size)}")  # fmt: skip


def size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes} bytes"


def run_with_deadline(fn: Callable[[], T], deadline_s: float, stop: threading.Event) -> T:
    """Run fn in a daemon thread; after deadline_s set `stop` (the transfer ends at its next chunk, and a stalled
    one within HF_HUB_DOWNLOAD_TIMEOUT) and raise TimeoutError."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name="hub-download", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        stop.set()
        raise TimeoutError
    if "error" in result:
        raise result["error"]
    return result["value"]


def remove_partial_downloads(cache: Path, repo_id: str, *, since: float) -> int:
    """Delete the files huggingface_hub is still writing for `repo_id` (`*.incomplete`, started after `since`): a
    download stopped at the deadline must not leave its bytes in the cache. Returns how many were removed."""
    blobs = cache / f"models--{repo_id.replace('/', '--')}" / "blobs"
    removed = 0
    for partial in blobs.glob("*.incomplete"):
        try:
            if partial.stat().st_ctime >= since - 1:
                partial.unlink()
                removed += 1
        except OSError:
            continue  # finished or removed meanwhile
    return removed
