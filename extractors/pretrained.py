"""Finding named pretrained weights without hanging: local caches first, network only when reachable.

The libraries' own downloaders retry for tens of seconds per file when the hub cannot be reached,
so the families ask here first: is the file already in the Hugging Face cache (or a URL cache)?
If not, is the hub reachable at all (offline switches, then a short TCP probe)? Only then is the
library's downloader called. Everything fails as one :class:`MissingWeightsError` line that says
which weights are missing and how to provide them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from featkit.errors import MissingWeightsError

OFFLINE_VARIABLES = ("FEATKIT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0
_REACHABLE: dict[tuple[str, int], bool] = {}


@dataclass(frozen=True)
class HubFile:
    """One candidate weights file on the Hugging Face hub (first cached filename wins)."""

    repo_id: str
    filenames: tuple[str, ...]
    revision: str | None = None

    def describe(self) -> str:
        return f"{self.repo_id} ({' or '.join(self.filenames)})"


@dataclass(frozen=True)
class UrlFile:
    """A weights file downloaded from a plain URL into ``cache_dir`` (checked against the sha256
    prefix when the publisher gives one)."""

    url: str
    cache_dir: str
    sha256_prefix: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.cache_dir).expanduser() / os.path.basename(urlparse(self.url).path)

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class LocalFile:
    """A weights file a library's pretrained config points at on the local file system."""

    path: Path

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class WeightsSource:
    """Where a named model's weights live: hub files and/or URLs, in the library's preference order."""

    model_id: str
    candidates: tuple[HubFile | UrlFile | LocalFile, ...] = field(default_factory=tuple)
    how_to: str = ""


def offline_switch() -> str | None:
    """The environment variable that forbids network access, if one is set to a true value."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str) -> bool:
    """Whether ``url``'s host (or the proxy configured for it) accepts a TCP connection within a
    few seconds (cached per host)."""
    from urllib.request import getproxies, proxy_bypass

    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = getproxies().get(parsed.scheme) or getproxies().get("all")
    if proxy and not proxy_bypass(host):
        proxied = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 8080
    if (host, port) not in _REACHABLE:
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                _REACHABLE[(host, port)] = True
        except OSError:
            _REACHABLE[(host, port)] = False
    return _REACHABLE[(host, port)]


def find_cached(source: WeightsSource) -> Path | None:
    """A locally cached weights file for ``source``, without touching the network."""
    for candidate in source.candidates:
        if isinstance(candidate, HubFile):
            from huggingface_hub import try_to_load_from_cache

            for filename in candidate.filenames:
                found = try_to_load_from_cache(
                    candidate.repo_id, filename, cache_dir=str(hf_cache_dir()), revision=candidate.revision
                )
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
        elif Path(candidate.path).expanduser().is_file():
            return Path(candidate.path).expanduser()
    return None


def _download(candidate: HubFile | UrlFile) -> Path:
    if isinstance(candidate, HubFile):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        last: Exception | None = None
        for filename in candidate.filenames:
            try:
                return Path(
                    hf_hub_download(
                        candidate.repo_id, filename, revision=candidate.revision, cache_dir=str(hf_cache_dir())
                    )
                )
            except EntryNotFoundError as err:  # try the next filename (e.g. .bin after .safetensors)
                last = err
        raise FileNotFoundError(f"none of {', '.join(candidate.filenames)} in {candidate.repo_id}: {last}")
    import torch.hub

    candidate.path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(candidate.url, str(candidate.path), hash_prefix=candidate.sha256_prefix,
                                   progress=True)
    return candidate.path


def _candidate_url(candidate: HubFile | UrlFile) -> str:
    return hf_endpoint() if isinstance(candidate, HubFile) else candidate.url


def resolve_weights(source: WeightsSource) -> Path:
    """The local file holding ``source``'s weights: cached, else downloaded when the host is reachable.

    Raises :class:`MissingWeightsError` (one line) when neither works.
    """
    cached = find_cached(source)
    if cached is not None:
        return cached
    looked = "; ".join(c.describe() for c in source.candidates) or "no download location is known"
    switch = offline_switch()
    if switch:
        why = f"{switch} is set"
    else:
        errors = []
        for candidate in source.candidates:
            if isinstance(candidate, LocalFile):
                errors.append(f"{candidate.path} does not exist")
                continue
            url = _candidate_url(candidate)
            if not reachable(url):
                errors.append(f"{urlparse(url).hostname} is unreachable")
                continue
            try:
                return _download(candidate)
            except Exception as err:  # noqa: BLE001 - any download failure becomes the one-line error
                errors.append(f"download failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
        why = "; ".join(errors) or "no download location is known"
    raise MissingWeightsError(
        f"weights for {source.model_id} are missing: not in the local caches (looked for {looked} "
        f"under {hf_cache_dir()}) and not downloadable ({why}); {source.how_to}"
    )


def find_checkpoint(directory: Path, preferred: Sequence[str]) -> Path:
    """The weights file inside a ``--weights`` directory (a hub snapshot or a ``local-dir`` folder)."""
    for name in preferred:
        if (directory / name).is_file():
            return directory / name
    found = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".pth", ".pt")
    )
    found.sort(key=lambda p: p.suffix != ".safetensors")
    if not found:
        raise MissingWeightsError(
            f"no weights file in {directory} (expected one of {', '.join(preferred)}, or any "
            f".safetensors/.bin/.pth/.pt file); pass the checkpoint file itself to --weights"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise MissingWeightsError(
            f"several weights files in {directory} ({names}); pass the one to use to --weights"
        )
    return found[0]
