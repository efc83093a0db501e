"""Registered public datasets: where their files live, how to read them, how to download them.

The data directory (``--data-dir`` or ``SEQREC_DATA_DIR``) holds one folder per dataset, laid out as
the files are published. Nothing here is read or fetched at import time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from seqrec.config import DataConfig
from seqrec.data.amazon import derive_id2asin, read_s3rec
from seqrec.data.log import InteractionLog, ItemCatalog
from seqrec.data.movielens import read_ml1m, read_ml100k
from seqrec.data.readers import read_sequences, read_table
from seqrec.errors import DataError
from seqrec.fsutil import atomic_write_text

DATA_DIR_ENV = "SEQREC_DATA_DIR"

_S3REC = "https://raw.githubusercontent.com/aHuiWang/CIKM2020-S3Rec/49a890dcb516c9ed3126564495234ea74d5cd566/data"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset folder: where to fetch it and how to check it."""

    name: str
    url: str
    sha256: str | None = None
    git_blob: str | None = None
    """``git hash-object`` of the file, for files whose published checksum is a git blob id."""
    member: str | None = None
    """Path inside the zip archive at ``url``."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str
    description: str
    needs: tuple[tuple[str, ...], ...]
    """Alternatives: the dataset loads when every file of one alternative exists."""
    files: tuple[RemoteFile, ...]
    read: Callable[[Path], tuple[InteractionLog, ItemCatalog]]
    citation: str = ""

    def path(self, data_dir: Path) -> Path:
        return data_dir / self.folder

    def available(self, data_dir: Path) -> bool:
        folder = self.path(data_dir)
        return any(all((folder / f).exists() for f in alt) for alt in self.needs)


def _s3rec_files(stem: str, sha_txt: str, sha_attr: str) -> tuple[RemoteFile, ...]:
    return (
        RemoteFile(f"{stem}.txt", f"{_S3REC}/{stem}.txt", sha256=sha_txt),
        RemoteFile(f"{stem}_item2attributes.json", f"{_S3REC}/{stem}_item2attributes.json",
                   sha256=sha_attr),
    )


_AMAZON_CITE = ("R. He and J. McAuley, WWW 2016; J. McAuley et al., SIGIR 2015; "
                "S3Rec preprocessing: K. Zhou et al., CIKM 2020")

DATASETS: dict[str, DatasetSpec] = {
    "beauty": DatasetSpec(
        "beauty", "amazon_beauty",
        "Amazon Beauty (S3Rec 5-core): 22,363 users, 12,101 items, titles/categories/brand/price",
        needs=(("Beauty.txt",),),
        files=_s3rec_files(
            "Beauty", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
            "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
        ) + (
            RemoteFile(
                "Amazon_Beauty.item",
                "https://raw.githubusercontent.com/parepic/RecBole_SAE/"
                "db83146720b1d9497d8614a16a8cdaa03c7a71b6/dataset/Amazon_Beauty/Amazon_Beauty.item",
                sha256="e56c8cbc404b0d82bc30ce9f063e06c0e93615c859c9ca9a522c669d79b74478",
            ),
            RemoteFile(
                "user_sequence.txt",
                "https://raw.githubusercontent.com/zhaodong-liu/GRAM/"
                "2c168a4cc12e70c464502149392943e091006835/rec_datasets/Beauty/user_sequence.txt",
                sha256="47197cbee7bdc1896926e10d96b807dce0aecb9a1f0c2ccc887c21090237c9b7",
            ),
        ),
        read=partial(read_s3rec, stem="Beauty"),
        citation=_AMAZON_CITE,
    ),
    "sports": DatasetSpec(
        "sports", "amazon_sports_and_outdoors",
        "Amazon Sports and Outdoors (S3Rec 5-core): 35,598 users, 18,357 items, attribute ids",
        needs=(("Sports_and_Outdoors.txt",),),
        files=_s3rec_files(
            "Sports_and_Outdoors", "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
            "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
        ),
        read=partial(read_s3rec, stem="Sports_and_Outdoors"),
        citation=_AMAZON_CITE,
    ),
    "toys": DatasetSpec(
        "toys", "amazon_toys_and_games",
        "Amazon Toys and Games (S3Rec 5-core): 19,412 users, 11,924 items, attribute ids",
        needs=(("Toys_and_Games.txt",),),
        files=_s3rec_files(
            "Toys_and_Games", "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
            "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
        ),
        read=partial(read_s3rec, stem="Toys_and_Games"),
        citation=_AMAZON_CITE,
    ),
    "yelp": DatasetSpec(
        "yelp", "yelp",
        "Yelp (S3Rec): 30,431 users, 20,033 businesses, category ids",
        needs=(("Yelp.txt",),),
        files=_s3rec_files(
            "Yelp", "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
            "f25acd5e1e680e0b22fd4e3f4fb6be4b2a7461e9222610616e3e1ee6702dd58d",
        ),
        read=partial(read_s3rec, stem="Yelp"),
        citation="Yelp Open Dataset (non-commercial use); S3Rec preprocessing",
    ),
    "lastfm": DatasetSpec(
        "lastfm", "lastfm",
        "LastFM HetRec 2011 (S3Rec): 1,090 users, 3,646 artists, tag ids",
        needs=(("LastFM.txt",),),
        files=_s3rec_files(
            "LastFM", "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
            "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef",
        ),
        read=partial(read_s3rec, stem="LastFM"),
        citation="Cantador, Brusilovsky and Kuflik, HetRec 2011",
    ),
    "ml-100k": DatasetSpec(
        "ml-100k", "ml-100k",
        "MovieLens 100K: 943 users, 1,682 movies, ratings with timestamps, titles and genres",
        needs=(("u.data",),),
        files=tuple(
            RemoteFile(n, f"{_GROUPLENS}/ml-100k.zip", sha256=h, member=f"ml-100k/{n}")
            for n, h in (
                ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
                ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
                ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
                ("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
                ("README", "d5f41f88d1a96b8faefed3c2f51fce1fca3be1ba6ab0d06e346898ffae920de9"),
            )
        ),
        read=read_ml100k,
        citation="F. M. Harper and J. A. Konstan, ACM TiiS 2015 (GroupLens terms: research only)",
    ),
    "ml-1m": DatasetSpec(
        "ml-1m", "ml-1m",
        "MovieLens 1M: 6,040 users, 3,706 rated movies, 1,000,209 interactions, titles and genres",
        needs=(("ratings.dat",), ("ml-1m_seq.txt",)),
        files=(
            RemoteFile("ratings.dat", f"{_GROUPLENS}/ml-1m.zip",
                       git_blob="77a7c4b150f588c23bb9e1f068aa996c0b413695", member="ml-1m/ratings.dat"),
            RemoteFile("movies.dat", f"{_GROUPLENS}/ml-1m.zip",
                       sha256="0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
                       member="ml-1m/movies.dat"),
            RemoteFile("users.dat", f"{_GROUPLENS}/ml-1m.zip",
                       sha256="1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
                       member="ml-1m/users.dat"),
        ),
        read=read_ml1m,
        citation="F. M. Harper and J. A. Konstan, ACM TiiS 2015 (GroupLens terms: research only)",
    ),
}


def default_data_dir() -> Path:
    """``$SEQREC_DATA_DIR`` if set, else ``~/.cache/seqrec/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seqrec" / "data"


def missing_message(spec: DatasetSpec, data_dir: Path) -> str:
    alts = " or ".join(", ".join(str(spec.path(data_dir) / f) for f in alt) for alt in spec.needs)
    return (
        f"dataset {spec.name!r} is not in the data directory {data_dir}: put {alts} there "
        f"(the data directory comes from --data-dir or ${DATA_DIR_ENV}), "
        f"or run 'seqrec data download {spec.name}' on a machine with internet access"
    )


def resolve(name_or_path: str, data_dir: Path | None = None) -> tuple[str, Path, DatasetSpec | None]:
    """``(display name, path, spec)`` for a registered name or a file/folder path."""
    data_dir = data_dir or default_data_dir()
    spec = DATASETS.get(name_or_path)
    if spec is not None:
        if not spec.available(data_dir):
            raise DataError(missing_message(spec, data_dir))
        return spec.name, spec.path(data_dir), spec
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise DataError(
            f"{name_or_path!r} is neither a registered dataset ({', '.join(DATASETS)}) "
            "nor an existing file or folder"
        )
    return path.stem if path.is_file() else path.name, path, None


def load(cfg: DataConfig, data_dir: Path | None = None) -> tuple[InteractionLog, ItemCatalog, str]:
    """Read the interactions and the catalog named by ``cfg`` (no preprocessing yet)."""
    name, path, spec = resolve(cfg.name, data_dir)
    fmt = cfg.format
    if spec is not None and fmt == "auto":
        log, catalog = spec.read(path)
        return log, catalog, name
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "ml-100k":
        log, catalog = read_ml100k(path)
    elif fmt == "ml-1m":
        log, catalog = read_ml1m(path)
    elif fmt == "sequences":
        if path.is_dir():
            stems = sorted(p.stem for p in path.glob("*.txt") if "_" not in p.stem)
            if not stems:
                raise DataError("no '<name>.txt' sequence file in this folder", path=path)
            log, catalog = read_s3rec(path, stems[0])
        else:
            log, catalog = read_sequences(path, cfg.encoding), ItemCatalog.empty()
    elif fmt == "table":
        log = read_table(
            path, user_col=cfg.user_col, item_col=cfg.item_col, time_col=cfg.time_col,
            rating_col=cfg.rating_col, separator=cfg.separator, encoding=cfg.encoding,
        )
        catalog = ItemCatalog.empty()
    else:
        raise DataError(
            f"unknown data format {fmt!r}; choose auto, ml-100k, ml-1m, sequences or table"
        )
    return log, catalog, name


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "u.data").exists():
            return "ml-100k"
        if (path / "ratings.dat").exists() or (path / "ml-1m_seq.txt").exists():
            return "ml-1m"
        if any(path.glob("*.txt")):
            return "sequences"
        raise DataError("cannot tell the format of this folder (no u.data, ratings.dat or *.txt)",
                        path=path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab", ".parquet"):
        return "table"
    if suffix in (".txt", ".seq"):
        return "sequences"
    raise DataError(
        f"cannot tell the format from the extension {suffix!r}; set --format "
        "(table for CSV/TSV/Parquet, sequences for 'user item item ...' lines)",
        path=path,
    )


# ----------------------------------------------------------------------------- download


def file_digest(path: Path, kind: str) -> str:
    data = path.read_bytes()
    if kind == "git_blob":
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return hashlib.sha256(data).hexdigest()


def verify(spec: DatasetSpec, data_dir: Path) -> list[tuple[str, str]]:
    """``(file, status)`` for each published file: ``ok``, ``missing`` or ``MISMATCH``."""
    out = []
    for f in spec.files:
        p = spec.path(data_dir) / f.name
        if not p.exists():
            out.append((f.name, "missing"))
            continue
        kind, want = ("git_blob", f.git_blob) if f.git_blob else ("sha256", f.sha256)
        out.append((f.name, "ok" if file_digest(p, kind) == want else "MISMATCH"))
    return out


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "seqrec"})
    with urllib.request.urlopen(req, timeout=timeout) as r, open(dest, "wb") as out:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name,
                  disable=not progress) as bar:
            while chunk := r.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def download(name: str, data_dir: Path | None = None, *, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Fetch a registered dataset's public files into ``data_dir`` and check every checksum.

    A file is moved into place only after its checksum matched; a network failure raises
    :class:`DataError` and leaves the folder as it was.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    data_dir = data_dir or default_data_dir()
    folder = spec.path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp_s:
        tmp = Path(tmp_s)
        fetched: dict[str, Path] = {}
        for f in spec.files:
            if (folder / f.name).exists():
                continue
            try:
                if f.url not in fetched:
                    fetched[f.url] = tmp / f"part{len(fetched)}"
                    _fetch(f.url, fetched[f.url], timeout, progress)
            except OSError as e:
                raise DataError(f"could not download {f.url}: {e}. {missing_message(spec, data_dir)}")
            src = fetched[f.url]
            if f.member:
                with zipfile.ZipFile(src) as z, z.open(f.member) as m, open(tmp / f.name, "wb") as o:
                    shutil.copyfileobj(m, o)
                src = tmp / f.name
            kind, want = ("git_blob", f.git_blob) if f.git_blob else ("sha256", f.sha256)
            got = file_digest(src, kind)
            if got != want:
                raise DataError(f"checksum mismatch for {f.name} from {f.url}: {kind} {got}, "
                                f"expected {want}; nothing was written")
            os.replace(src, folder / f.name)
    if name == "beauty" and not (folder / "Beauty_item_id2asin.tsv").exists():
        mapping = derive_id2asin(folder)
        atomic_write_text(folder / "Beauty_item_id2asin.tsv",
                          "item_id\tasin\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(mapping.items())))
    return folder
