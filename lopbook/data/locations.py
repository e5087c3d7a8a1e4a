"""Where data live: directories, environment variables, and the network probe."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "DATA_ENV",
    "IMAGENET_ENV",
    "TINYIMAGENET_ENV",
    "CONNECT_TIMEOUT_S",
    "DOWNLOAD_TIMEOUT_S",
    "data_root",
    "default_cache_dir",
    "reachable",
    "socket_timeout",
]

#: Directory with MNIST (and torchvision's CIFAR-100 folder).
DATA_ENV = "LOPBOOK_DATA"
#: Class folder of the paper's ImageNet 32x32 data.
IMAGENET_ENV = "LOPBOOK_IMAGENET"
#: Class folder of Tiny ImageNet at 32x32 (``prepare-tinyimagenet``).
TINYIMAGENET_ENV = "LOPBOOK_TINYIMAGENET"

#: Seconds allowed for the "is the download server reachable?" probe.
CONNECT_TIMEOUT_S = 3.0
#: Socket timeout while a download is running (per blocking read, not total).
DOWNLOAD_TIMEOUT_S = 30.0


def data_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the data directory chosen by the user, if any.

    Parameters
    ----------
    root : path-like, optional
        Explicit directory; wins over the environment.

    Returns
    -------
    pathlib.Path or None
        ``root`` if given, else ``$LOPBOOK_DATA`` if set and non-empty,
        else ``None`` (meaning: use the default cache directory).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else None


def env_path(name: str) -> Path | None:
    """The path in environment variable ``name``, or ``None`` if unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def default_cache_dir() -> Path:
    """Directory for downloads: ``$XDG_CACHE_HOME/lopbook`` or ``~/.cache/lopbook``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lopbook"


def _targets(urls: Iterable[str]) -> list[tuple[str, int]]:
    """``(host, port)`` to connect to for each URL: its proxy's if one is set."""
    proxies = urllib.request.getproxies()
    targets: list[tuple[str, int]] = []
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        proxy = proxies.get(parsed.scheme)
        if proxy:
            parsed = urllib.parse.urlsplit(
                proxy if "://" in proxy else f"http://{proxy}"
            )
        if parsed.hostname:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if (parsed.hostname, port) not in targets:
                targets.append((parsed.hostname, port))
    return targets


def reachable(urls: Iterable[str], timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to any of ``urls`` (or their proxy) opens quickly.

    The probe runs in a daemon thread with a hard deadline, so a hanging DNS
    lookup cannot stall the caller for longer than ``timeout`` seconds.
    """
    targets = _targets(urls)
    found = threading.Event()

    def probe() -> None:
        for host, port in targets:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    found.set()
                    return
            except OSError:
                continue

    thread = threading.Thread(target=probe, name="lopbook-net-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return found.is_set()


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Set the default socket timeout (used by urllib) and restore it afterwards."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
