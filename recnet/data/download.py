"""Find a MovieLens archive on disk, or download it from GroupLens, checked and cached.

Pipeline position: first step of ``kind: movielens`` loading; ``recnet.data.load`` calls
``resolve_movielens`` and hands the path to ``recnet.data.movielens``. Search order:

1. ``dataset.path`` (zip or folder; a missing path is an error naming it);
2. ``dataset.data_dir``, else ``$RECNET_DATA_DIR``: ``<variant>.zip`` or ``<variant>/``;
3. the cache, ``$RECNET_CACHE_DIR`` or ``~/.cache/recnet``: the same two names;
4. with ``dataset.download``: ``<base_url>/<variant>.zip`` is streamed with httpx to a temporary
   file in the data dir (when one is set) or the cache, hashed on the way, and atomically renamed
   into place. ml-latest-small is checked against a pinned sha256; ml-100k and ml-1m against the
   ``<variant>.zip.md5`` GroupLens publishes beside them. The sha256 is then written to
   ``<variant>.zip.sha256`` so that later loads of the cached file are verified too.

A checksum mismatch deletes the download and raises ``DatasetError``. A network failure or a
disabled download raises one ``DatasetError`` listing every place looked in, the URL to fetch the
archive from and how to pass it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from recnet.config.scenario import DatasetSettings
from recnet.errors import DatasetError

BASE_URL = "https://files.grouplens.org/datasets/movielens"
PINNED_SHA256: dict[str, str] = {
    "ml-latest-small": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
}
DATA_DIR_ENV = "RECNET_DATA_DIR"
CACHE_DIR_ENV = "RECNET_CACHE_DIR"
_CHUNK = 1 << 16


class DownloadError(DatasetError):
    """The archive could not be fetched (network, HTTP status, unreadable checksum file)."""


def cache_dir() -> Path:
    """Recnet's own download cache: ``$RECNET_CACHE_DIR`` or ``~/.cache/recnet``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recnet"


def data_dir(settings: DatasetSettings) -> Path | None:
    """The user's data folder: ``dataset.data_dir``, else ``$RECNET_DATA_DIR``, else None."""
    if settings.data_dir is not None:
        return Path(settings.data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def verify_cached(archive: Path) -> None:
    """Check ``archive`` against the ``<archive>.sha256`` written beside it, if there is one."""
    sidecar = _sidecar(archive)
    if not archive.is_file() or not sidecar.is_file():
        return
    fields = sidecar.read_text(encoding="utf-8").split()
    expected = fields[0].lower() if fields else ""
    actual = sha256_file(archive)
    if actual != expected:
        raise DatasetError(
            f"{archive} does not match its recorded sha256 ({sidecar}: expected {expected}, "
            f"got {actual})",
            f"delete {archive} and {sidecar} to download it again",
        )


def _candidates(folder: Path, variant: str) -> list[Path]:
    return [folder / f"{variant}.zip", folder / variant]


def resolve_movielens(settings: DatasetSettings, *, base_url: str = BASE_URL) -> Path:
    """Return the zip or folder to load for ``settings`` (downloading it if allowed)."""
    if settings.path is not None:
        path = Path(settings.path).expanduser()
        if not path.exists():
            raise DatasetError(
                f"dataset.path {path} does not exist",
                "point dataset.path at a MovieLens zip or extracted folder",
            )
        return path
    variant = settings.variant
    user_dir = data_dir(settings)
    folders = ([user_dir] if user_dir is not None else []) + [cache_dir()]
    looked: list[Path] = []
    for folder in folders:
        for candidate in _candidates(folder, variant):
            looked.append(candidate)
            if candidate.exists():
                verify_cached(candidate)
                return candidate
    url = f"{base_url.rstrip('/')}/{variant}.zip"
    where = ", ".join(str(p) for p in looked)
    remedy = (
        f"download {url} and pass it with --set dataset.path=<file>, or put it (or its "
        f"extracted folder) in the folder named by ${DATA_DIR_ENV} or dataset.data_dir"
    )
    if not settings.download:
        raise DatasetError(
            f"{variant} not found (looked in: {where}) and downloading is disabled "
            "(dataset.download=false)",
            remedy,
        )
    try:
        return download_movielens(variant, folders[0], base_url=base_url)
    except DownloadError as exc:
        raise DatasetError(
            f"{variant} not found (looked in: {where}) and the download failed: {exc.message}",
            remedy,
        ) from exc


def _fetch_md5(client: httpx.Client, url: str) -> str:
    try:
        response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot fetch checksum {url} ({exc})") from exc
    match = re.search(r"\b([0-9a-fA-F]{32})\b", response.text)
    if match is None:
        raise DownloadError(f"no md5 checksum found in {url}")
    return match.group(1).lower()


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )


def download_movielens(
    variant: str,
    dest_dir: Path,
    *,
    base_url: str = BASE_URL,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    show_progress: bool = True,
) -> Path:
    """Download ``<base_url>/<variant>.zip`` into ``dest_dir`` and verify it.

    The checksum is ``expected_sha256`` if given, else the pinned sha256 for the variant, else
    the md5 published at ``<base_url>/<variant>.zip.md5``. Returns the archive path; writes
    ``<variant>.zip.sha256`` beside it. Raises ``DownloadError`` when the network fails and
    ``DatasetError`` when the checksum does not match (the download is deleted).
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the download folder {dest_dir} ({exc})",
            f"set ${CACHE_DIR_ENV} or dataset.data_dir to a writable folder",
        ) from exc
    url = f"{base_url.rstrip('/')}/{variant}.zip"
    target = dest_dir / f"{variant}.zip"
    expected_sha = (expected_sha256 or PINNED_SHA256.get(variant) or "").lower() or None
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client:
        expected_md5 = None if expected_sha else _fetch_md5(client, url + ".md5")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{variant}.", suffix=".part", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                client.stream("GET", url) as response,
                _progress(show_progress) as progress,
            ):
                response.raise_for_status()
                total = int(response.headers.get("content-length", 0)) or None
                task = progress.add_task(f"Downloading {variant}", total=total)
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    progress.advance(task, len(chunk))
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"cannot download {url} ({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DatasetError(
                f"cannot write the download to {dest_dir} ({exc})",
                f"free some space or set ${CACHE_DIR_ENV} / dataset.data_dir to another folder",
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if expected_sha and sha.hexdigest() != expected_sha:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"checksum mismatch for {url}: expected sha256 {expected_sha}, got "
            f"{sha.hexdigest()}; the download was deleted",
            "try again later; if it persists, download the file yourself and pass it with "
            "dataset.path",
        )
    if not expected_sha and md5.hexdigest() != expected_md5:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"checksum mismatch for {url}: expected md5 {expected_md5} (from {url}.md5), got "
            f"{md5.hexdigest()}; the download was deleted",
            "try again later; if it persists, download the file yourself and pass it with "
            "dataset.path",
        )
    os.replace(tmp, target)
    sidecar_tmp = dest_dir / f".{variant}.zip.sha256.part"
    sidecar_tmp.write_text(f"{sha.hexdigest()}  {target.name}\n", encoding="utf-8")
    os.replace(sidecar_tmp, _sidecar(target))
    return target
