"""Azure AI Search through the emulator: indexing with embeddings, and query latency and recall.

    python -m bench.search        -> bench/results/search.json

On an embedded Redis (the quota) and a ``python -m emulators`` of its own, with the real SDK:

- ``index_docs_per_s``: 10,000 one-chunk documents through tasks/search_index.py's
  ``index_chunk_batch`` (embed under the embedding quota, then upload), batches of 100 on
  INDEX_THREADS threads as workers would run them; vectors of VECTOR_DIMENSIONS; the median of
  ``--rounds`` runs, each into a fresh index (all runs in ``index_docs_per_s_rounds``);
- ``query_p50_ms`` / ``query_p95_ms`` for ``text`` (BM25), ``vector`` (k = 10) and ``hybrid``
  (RRF) queries at 10,000 documents, each a tasks/search.py call (SDK, HTTP, emulator), one at a
  time, alternating the kinds so a noisy neighbour slows them alike;
- ``recall_at_10``: the emulator's vector top 10 against a brute-force numpy baseline over the
  same vectors (exact cosine), averaged over the queries; 1.0 is the target (the emulator is
  exact, so anything less is a bug or a float32 tie at rank 10).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from bench.report import median, percentile, write_result
from settings.redis_server import RedisServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX = "bench-search"
VECTOR_DIMENSIONS = 256
BATCH_SIZE = 100
INDEX_THREADS = 4
TOP = 10
START_TIMEOUT_SECS = 60.0
# Far above what the run asks for: the benchmark measures the search path, not the quota.
EMBEDDING_LIMITS = {"tpm": 100_000_000, "rpm": 1_000_000}


def vocabulary() -> list[str]:
    """Real words, from the project's READMEs, so texts and queries look like prose."""
    paths = [*REPO_ROOT.glob("README.md"), *REPO_ROOT.glob("*/README.md")]
    text = " ".join(path.read_text(encoding="utf-8") for path in paths)
    return sorted({word.lower() for word in re.findall(r"[A-Za-z]{3,}", text)})


def documents(count: int, rng: random.Random) -> list[dict[str, str]]:
    words = vocabulary()
    return [
        {
            "id": f"doc-{n}",
            "title": " ".join(rng.choices(words, k=4)),
            "text": " ".join(rng.choices(words, k=rng.randint(40, 80))),
        }
        for n in range(count)
    ]


def queries(docs: list[dict[str, str]], count: int, rng: random.Random) -> list[str]:
    """Three words from a random document each: every query has real matches."""
    return [" ".join(rng.sample(doc["text"].split(), 3)) for doc in rng.sample(docs, count)]


@contextmanager
def emulator(env: dict[str, str], log: Path) -> Iterator[None]:
    url = f"http://127.0.0.1:{env['EMULATOR_PORT']}/health"
    with open(log, "ab") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", "emulators"],
            env=env,
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECS
            while True:
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start; see {log}")
                time.sleep(0.2)
            yield
        finally:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(30)


def measure_indexing(chunks: list[dict], index: str) -> float:
    from tasks.search_index import index_chunk_batch

    batches = [chunks[i : i + BATCH_SIZE] for i in range(0, len(chunks), BATCH_SIZE)]
    started = time.perf_counter()
    with ThreadPoolExecutor(INDEX_THREADS) as pool:
        results = list(pool.map(lambda batch: index_chunk_batch(index, batch), batches))
    elapsed = time.perf_counter() - started
    failed = sum(len(result["failed"]) for result in results)
    if failed:
        raise RuntimeError(f"{failed} chunks failed to index")
    return len(chunks) / elapsed


def measure_queries(
    texts: list[str], vectors: np.ndarray
) -> tuple[dict[str, list[float]], list[list[str]]]:
    """Seconds per query of each kind, and the vector queries' keys (for recall)."""
    from tasks import search

    timings: dict[str, list[float]] = {"text": [], "vector": [], "hybrid": []}
    found: list[list[str]] = []
    for text, vector in zip(texts, vectors, strict=True):
        as_list = vector.tolist()
        started = time.perf_counter()
        search.search_documents(INDEX, text, top=TOP, select=["id"])
        timings["text"].append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = search.vector_search(INDEX, as_list, k=TOP, select=["id"])
        timings["vector"].append(time.perf_counter() - started)
        found.append([result["id"] for result in answer["results"]])
        started = time.perf_counter()
        search.hybrid_search(INDEX, text, as_list, top=TOP, k=TOP, select=["id"])
        timings["hybrid"].append(time.perf_counter() - started)
    return timings, found


def recall(
    found: list[list[str]], keys: list[str], matrix: np.ndarray, queries_: np.ndarray
) -> tuple[float, float]:
    """Mean recall@10 of ``found`` against exact cosine over ``matrix``; the baseline's p50 ms."""
    normalised = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    recalls, timings = [], []
    for answer, query in zip(found, queries_, strict=True):
        started = time.perf_counter()
        similarities = normalised @ (query / np.linalg.norm(query))
        best = np.argsort(-similarities, kind="stable")[:TOP]
        timings.append(time.perf_counter() - started)
        expected = {keys[i] for i in best}
        recalls.append(len(expected & set(answer)) / TOP)
    return float(np.mean(recalls)), median(timings) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="indexing runs; the median counts")
    args = parser.parse_args(argv)
    rng = random.Random(15)

    with (
        tempfile.TemporaryDirectory(prefix="bench-search-") as scratch,
        RedisServer(Path(scratch) / "redis") as server,
    ):
        from settings.tiktoken_offline import seed_tiktoken_cache

        limits = Path(scratch) / "limits.json"
        limits.write_text(
            json.dumps({"gpt-4o": EMBEDDING_LIMITS, "text-embedding-3-large": EMBEDDING_LIMITS})
        )
        os.environ.update(
            CONDUIT_ENV_FILE=os.devnull,
            REDIS_URL=server.url,
            EMULATOR_PORT=str(free_port()),
            EMULATOR_LIMITS_FILE=str(limits),
            EMULATOR_SEARCH_DATA_DIR=str(Path(scratch) / "search"),
            TIKTOKEN_CACHE_DIR=str(seed_tiktoken_cache()),
            APP_EMBEDDING_TPM_QUOTA=str(EMBEDDING_LIMITS["tpm"]),
            APP_EMBEDDING_RPM_QUOTA=str(EMBEDDING_LIMITS["rpm"]),
            APP_SEARCH_VECTOR_DIMENSIONS=str(VECTOR_DIMENSIONS),
            LOG_LEVEL="WARNING",
        )
        from settings import get_settings

        get_settings.cache_clear()
        from tasks.embedding import create_embedding_batch
        from tasks.search_index import plan_chunks

        docs = documents(args.documents, rng)
        chunks = plan_chunks(docs)
        with emulator(dict(os.environ), Path(scratch) / "emulator.log"):
            # Each round fills a fresh index; the queries run on the last one.
            rates = [
                measure_indexing(chunks, INDEX if n == args.rounds - 1 else f"{INDEX}-{n}")
                for n in range(args.rounds)
            ]
            docs_per_s = median(rates)
            texts = queries(docs, args.queries, rng)
            query_vectors = np.asarray(
                create_embedding_batch(texts, dimensions=VECTOR_DIMENSIONS), dtype=np.float64
            )
            timings, found = measure_queries(texts, query_vectors)
            stored = np.asarray(
                create_embedding_batch(
                    [chunk["content"] for chunk in chunks], dimensions=VECTOR_DIMENSIONS
                ),
                dtype=np.float64,
            )
        keys = [chunk["id"] for chunk in chunks]
        recall_at_10, baseline_ms = recall(found, keys, stored, query_vectors)

    figures = {
        "index_docs_per_s": round(docs_per_s, 1),
        "index_docs_per_s_rounds": [round(rate, 1) for rate in rates],
        "recall_at_10": round(recall_at_10, 4),
        "query_p50_ms": {kind: round(median(t) * 1000, 2) for kind, t in timings.items()},
        "query_p95_ms": {kind: round(percentile(t, 0.95) * 1000, 2) for kind, t in timings.items()},
        "baseline_vector_p50_ms": round(baseline_ms, 3),
        "documents": len(chunks),
        "queries": args.queries,
        "vector_dimensions": VECTOR_DIMENSIONS,
        "index_batch_size": BATCH_SIZE,
        "index_threads": INDEX_THREADS,
        "loadavg": [round(value, 2) for value in os.getloadavg()],
    }
    p50 = figures["query_p50_ms"]
    write_result(
        "search",
        figures,
        f"{figures['index_docs_per_s']} docs/s indexed, recall@10 {figures['recall_at_10']}, "
        f"p50 text {p50['text']} ms / vector {p50['vector']} ms / hybrid {p50['hybrid']} ms "
        f"at {len(chunks)} docs (load {figures['loadavg'][0]})",
    )


if __name__ == "__main__":
    main()
