"""MovieLens loading (real ml-latest-small, handmade ml-100k / ml-1m), filters and download."""

from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recnet.config.scenario import DatasetSettings
from recnet.data.download import download_movielens, resolve_movielens, sha256_file
from recnet.data.load import load_dataset
from recnet.data.movielens import clean_title, load_movielens
from recnet.errors import DatasetError

LATEST = {
    "ratings.csv": "userId,movieId,rating,timestamp\n"
    "1,10,4.0,300\n1,20,2.5,100\n2,10,5.0,200\n1,30,3.0,300\n2,20,1.0,50\n2,40,4.5,400\n",
    "movies.csv": "movieId,title,genres\n"
    '10,"Usual Suspects, The (1995)",Crime|Mystery|Thriller\n'
    "20,Babylon 5,(no genres listed)\n"
    '30,"Dark, Horse (2001)",Drama\n',
    "tags.csv": "userId,movieId,tag,timestamp\n"
    "1,10,Twist Ending,1\n2,10, twist ending ,2\n1,10,Kevin Spacey,3\n2,10,crime,4\n",
}


def ml100k_files() -> dict[str, bytes]:
    flags = ["0"] * 19
    unknown_and_drama = ["1"] + ["0"] * 7 + ["1"] + ["0"] * 10
    comedy = ["0"] * 5 + ["1"] + ["0"] * 13
    items = [
        f"1|Café Society (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}",
        f"2|Untitled|05-May-1997||http://y|{'|'.join(unknown_and_drama)}",
        f"3|unknown|||http://z|{'|'.join(flags)}",
    ]
    data = "7\t1\t4\t881250949\n7\t2\t3\t881250940\n8\t1\t5\t881250950\n7\t3\t1\t881250960\n"
    return {"u.data": data.encode(), "u.item": ("\n".join(items) + "\n").encode("latin-1")}


def ml1m_files() -> dict[str, bytes]:
    movies = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n"
    ratings = "1::1::5::978300760\n1::2::3::978300700\n2::2::4::978300800\n1::9::2::978300900\n"
    return {"ratings.dat": ratings.encode(), "movies.dat": movies.encode("latin-1")}


def make_zip(path: Path, files: dict[str, str | bytes], top: str | None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if top:
            zf.writestr(f"{top}/", "")
        for name, body in files.items():
            zf.writestr(f"{top}/{name}" if top else name, body)
    return path


def write_folder(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        data = body.encode() if isinstance(body, str) else body
        (folder / name).write_bytes(data)
    return folder


# --- the real ml-latest-small -------------------------------------------------------------


def test_real_zip_counts_text_and_order(ml_small_zip: Path) -> None:
    ds = load_movielens(ml_small_zip)
    assert ds.name == "ml-latest-small"
    assert len(ds.users) == 610
    assert len(ds.items) == 9742
    assert len(ds.interactions) == 100836
    times = [i.timestamp for i in ds.interactions]
    assert times == sorted(times)
    step_brothers = ds.items["60756"]
    assert "funny" in step_brothers.tags
    assert step_brothers.title == "Step Brothers" and step_brothers.year == 2008
    toy_story = ds.items["1"]
    assert (toy_story.title, toy_story.year) == ("Toy Story", 1995)
    assert toy_story.genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert ds.items["50"].title == "The Usual Suspects"
    assert all(g != "(no genres listed)" for item in ds.items.values() for g in item.genres)
    assert all(t == t.strip().lower() for item in ds.items.values() for t in item.tags)
    assert all(len(set(item.tags)) == len(item.tags) for item in ds.items.values())
    first = ds.interactions[0]
    assert isinstance(first.user, str) and isinstance(first.item, str)
    assert first.rating is not None


def test_real_zip_ties_keep_file_order(ml_small_zip: Path) -> None:
    ds = load_movielens(ml_small_zip)
    with zipfile.ZipFile(ml_small_zip) as zf:
        lines = zf.read("ml-latest-small/ratings.csv").decode().splitlines()[1:]
    file_pos = {(r[0], r[1]): k for k, r in enumerate(line.split(",") for line in lines)}
    keys = [(i.timestamp, file_pos[(i.user, i.item)]) for i in ds.interactions]
    assert keys == sorted(keys)


def test_extracted_folder_matches_zip(ml_small_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(ml_small_zip) as zf:
        zf.extractall(tmp_path)
    from_zip = load_movielens(ml_small_zip)
    for folder in (tmp_path, tmp_path / "ml-latest-small"):  # top folder inside, or files direct
        from_dir = load_movielens(folder)
        assert from_dir.interactions == from_zip.interactions
        assert from_dir.items == from_zip.items


# --- handmade layouts ---------------------------------------------------------------------


def test_latest_layout_text_tags_and_missing_metadata(tmp_path: Path) -> None:
    ds = load_movielens(make_zip(tmp_path / "tiny.zip", LATEST, top=None))
    assert ds.name == "tiny"
    assert [(i.user, i.item, i.timestamp) for i in ds.interactions] == [
        ("2", "20", 50),
        ("1", "20", 100),
        ("2", "10", 200),
        ("1", "10", 300),
        ("1", "30", 300),
        ("2", "40", 400),
    ]
    usual = ds.items["10"]
    assert (usual.title, usual.year) == ("The Usual Suspects", 1995)
    assert usual.genres == ("Crime", "Mystery", "Thriller")
    assert usual.tags == ("twist ending", "crime", "kevin spacey")  # by count, then alphabetical
    assert ds.items["20"].genres == () and ds.items["20"].year is None
    assert ds.items["30"].title == "Dark, Horse"
    assert ds.items["40"].title == "40"  # rated but absent from movies.csv: bare item


def test_ml100k_zip(tmp_path: Path) -> None:
    ds = load_movielens(make_zip(tmp_path / "ml-100k.zip", ml100k_files(), top="ml-100k"))
    assert ds.name == "ml-100k"
    assert [(i.user, i.item, i.rating) for i in ds.interactions] == [
        ("7", "2", 3.0),
        ("7", "1", 4.0),
        ("8", "1", 5.0),
        ("7", "3", 1.0),
    ]
    assert ds.items["1"].title == "Café Society" and ds.items["1"].year == 1995
    assert ds.items["1"].genres == ("Comedy",)
    assert ds.items["2"].year == 1997  # from the release date
    assert ds.items["2"].genres == ("Drama",)  # 'unknown' dropped
    assert ds.items["3"].year is None and ds.items["3"].genres == ()


def test_ml1m_folder(tmp_path: Path) -> None:
    ds = load_movielens(write_folder(tmp_path / "ml-1m", ml1m_files()))
    assert ds.name == "ml-1m"
    assert [i.timestamp for i in ds.interactions] == [978300700, 978300760, 978300800, 978300900]
    assert ds.items["2"].title == "Amélie" and ds.items["2"].genres == ("Comedy", "Romance")
    assert ds.items["1"].genres == ("Animation", "Children's", "Comedy")
    assert ds.items["9"].title == "9"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Usual Suspects, The (1995)", ("The Usual Suspects", 1995)),
        ("Postman, The (Postino, Il) (1994)", ("The Postman (Postino, Il)", 1994)),
        ("Death Note: Desu nôto (2006–2007)", ("Death Note: Desu nôto", 2006)),
        ("Babylon 5", ("Babylon 5", None)),
        ("Room, A ", ("A Room", None)),
    ],
)
def test_clean_title(raw: str, expected: tuple[str, int | None]) -> None:
    assert clean_title(raw) == expected


# --- filters through load_dataset ------------------------------------------------------------


def test_seeded_subsample_is_reproducible_and_seed_sensitive(ml_small_zip: Path) -> None:
    settings = DatasetSettings(path=ml_small_zip, max_users=40)
    a = load_dataset(settings, seed=3)
    b = load_dataset(settings, seed=3)
    c = load_dataset(settings, seed=4)
    assert len(a.users) == 40
    assert a.interactions == b.interactions
    assert set(a.users) != set(c.users)
    full = load_movielens(ml_small_zip)
    kept = set(a.users)
    assert a.interactions == [i for i in full.interactions if i.user in kept]
    assert len(a.items) == 9742  # the catalogue stays whole


def test_min_rating_and_recent_window(ml_small_zip: Path) -> None:
    full = load_movielens(ml_small_zip)
    ds = load_dataset(
        DatasetSettings(
            path=ml_small_zip, min_rating=4.0, max_interactions_per_user=5, short_users="drop"
        ),
        seed=0,
    )
    assert all(i.rating is not None and i.rating >= 4.0 for i in ds.interactions)
    per_user: dict[str, list[int]] = {}
    for i in ds.interactions:
        per_user.setdefault(i.user, []).append(i.timestamp)
    assert all(3 <= len(ts) <= 5 for ts in per_user.values())
    user = ds.users[0]
    liked = [i for i in full.interactions if i.user == user and i.rating >= 4.0]
    assert [i for i in ds.interactions if i.user == user] == liked[-5:]


# --- resolution and download (local server only) ----------------------------------------


class _NoDelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


@contextmanager
def serve(files: dict[str, bytes], seen: list[str] | None = None) -> Iterator[str]:
    """Serve ``files`` (URL path → body) on 127.0.0.1; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _NoDelayServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/movielens"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder, no data dir and no proxies."""
    for var in (
        "RECNET_DATA_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECNET_CACHE_DIR", str(cache))
    return cache


def test_download_with_md5_then_cached_and_verified(tmp_path: Path, offline_env: Path) -> None:
    body = make_zip(tmp_path / "src.zip", ml100k_files(), top="ml-100k").read_bytes()
    md5 = hashlib.md5(body).hexdigest()
    files = {"/movielens/ml-100k.zip": body, "/movielens/ml-100k.zip.md5": f"MD5 (x) = {md5}\n"}
    seen: list[str] = []
    settings = DatasetSettings(variant="ml-100k", short_users="drop")
    with serve(
        {k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()}, seen
    ) as url:
        ds = load_dataset(settings, seed=0, base_url=url)
        assert len(ds.interactions) == 3 and ds.name == "ml-100k"  # user 8 had one rating
        cached = offline_env / "ml-100k.zip"
        assert cached.read_bytes() == body
        sidecar = (offline_env / "ml-100k.zip.sha256").read_text().split()[0]
        assert sidecar == hashlib.sha256(body).hexdigest()
        assert sorted(p.name for p in offline_env.iterdir()) == [
            "ml-100k.zip",
            "ml-100k.zip.sha256",
        ]
        n_requests = len(seen)
        assert resolve_movielens(settings, base_url=url) == cached  # from the cache now
        assert len(seen) == n_requests
    cached.write_bytes(body + b"tampered")
    with pytest.raises(DatasetError, match="sha256") as err:
        resolve_movielens(settings, base_url="http://127.0.0.1:9/unused")
    assert str(cached) in str(err.value)


def test_md5_mismatch_deletes_download(tmp_path: Path, offline_env: Path) -> None:
    body = make_zip(tmp_path / "src.zip", ml1m_files(), top="ml-1m").read_bytes()
    files = {"/movielens/ml-1m.zip": body, "/movielens/ml-1m.zip.md5": b"0" * 32}
    with serve(files) as url, pytest.raises(DatasetError, match="checksum mismatch"):
        resolve_movielens(DatasetSettings(variant="ml-1m"), base_url=url)
    assert not offline_env.exists() or list(offline_env.iterdir()) == []


def test_pinned_sha256_mismatch_deletes_download(tmp_path: Path, offline_env: Path) -> None:
    body = make_zip(tmp_path / "src.zip", LATEST, top="ml-latest-small").read_bytes()
    with serve({"/movielens/ml-latest-small.zip": body}) as url:
        with pytest.raises(DatasetError, match="696d65a3") as err:
            resolve_movielens(DatasetSettings(), base_url=url)
        assert "deleted" in str(err.value)
        assert list(offline_env.iterdir()) == []
        dest = tmp_path / "dest"
        good = download_movielens(
            "ml-latest-small",
            dest,
            base_url=url,
            expected_sha256=hashlib.sha256(body).hexdigest(),
            show_progress=False,
        )
        assert sha256_file(good) == hashlib.sha256(body).hexdigest()
        assert len(load_movielens(good).interactions) == 6


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/movielens"


@pytest.mark.parametrize("server", ["404", "refused"])
def test_network_failure_gives_one_clear_error(offline_env: Path, server: str) -> None:
    if server == "404":
        with serve({}) as url, pytest.raises(DatasetError) as err:  # every request answers 404
            resolve_movielens(DatasetSettings(variant="ml-1m"), base_url=url)
    else:
        url = _closed_port_url()
        with pytest.raises(DatasetError) as err:
            resolve_movielens(DatasetSettings(variant="ml-1m"), base_url=url)
    text = str(err.value)
    assert text.startswith("ml-1m not found (looked in:")
    assert str(offline_env / "ml-1m.zip") in text
    assert f"{url}/ml-1m.zip" in text and "dataset.path" in text and "RECNET_DATA_DIR" in text
    assert not offline_env.exists() or list(offline_env.iterdir()) == []


def test_data_dir_and_env_lookup(
    tmp_path: Path, offline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_folder(tmp_path / "data" / "ml-1m", ml1m_files())
    settings = DatasetSettings(variant="ml-1m", data_dir=tmp_path / "data", download=False)
    assert resolve_movielens(settings) == folder
    monkeypatch.setenv("RECNET_DATA_DIR", str(tmp_path / "data"))
    ds = load_dataset(DatasetSettings(variant="ml-1m", download=False, short_users="drop"), 0)
    assert ds.name == "ml-1m" and ds.users == ["1"]
