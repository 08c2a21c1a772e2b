"""Vector search engines side by side, on this machine: which one the image index should use, and from what size.

Contenders, all in-process:
- numpy exact: float32 matrix-vector product over all vectors + `argpartition` (what `alignsam search` does).
- faiss-cpu `IndexFlatIP` (exact, BLAS) and `IndexHNSWFlat` (inner product, M=32).
- usearch HNSW (M=16, expansion_add 64; inner product on unit vectors), float32, float16 and int8 (cosine)
  storage.
- LanceDB embedded: one table with the vectors and metadata (id, path, width, height), `IVF_PQ` index,
  queries refined on the stored float32 vectors (`refine_factor`).

For each size (random unit vectors of 640 dimensions, ALIGN-B7's width) and engine: build time, time to add
10k more vectors to the built index, memory (resident set growth of this process while building, the input
array excluded), size on disk, p50/p99 latency of one query and of a batch of 32 queries, and recall@10
against exact search. The approximate engines are measured at several search widths (HNSW `ef`, IVF
`nprobes`); the table shows the narrowest one whose recall@10 reaches 0.95, and the sweep is kept.

Random vectors in 640 dimensions have no structure and are the hardest case for a graph index. Recall is
therefore also measured on the demo model's real embeddings (`Encoder.from_pretrained("demo")` on synthetic
scenes: only a few thousand, since the model runs at 30-130 images/s here depending on the load), and, to
reach 100k and 1M with their structure, on "demo-fit" vectors: samples of a Gaussian fitted to those
embeddings (mean and covariance, 160 dimensions), mapped isometrically into 640 dimensions (inner
products unchanged) and normalised. Queries of each data set come from its own distribution (held-out
scenes for the real set).

    python -m benchmarks.index_engines                      # 100k and 1M: 1-2 hours on 2 shared cores
    python -m benchmarks.index_engines --sizes 100000 --engines numpy,usearch-f32
    python -m benchmarks.index_engines --quick              # 20k vectors, under a minute (the test suite)
    python -m benchmarks.index_engines --markdown benchmarks/index_engines.md --json /tmp/index.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine

DIM = 640
K = 10
ADD = 10_000
BATCH = 32
TARGET_RECALL = 0.95
TARGET_P50_MS = 5.0
THREADS = 2


# --- measuring -------------------------------------------------------------------------------------------


@contextmanager
def threads(n: int) -> Iterator[None]:
    """BLAS and OpenMP (numpy, faiss) limited to `n` threads: one for single queries, as a server answers them."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the limit is an optimisation of the measurement, not part of it
        yield
        return
    with threadpool_limits(n):
        yield


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_memory() -> None:
    """Collect garbage and give freed heap back to the system, so the next engine's RSS growth is its own."""
    gc.collect()
    with suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def folder_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def latencies_ms(fn: Callable[[np.ndarray], Any], queries: np.ndarray, budget_s: float, min_calls: int = 5) -> dict:
    """p50/p99 of `fn(query)` over the rows of `queries` (each a query or a batch), until they run out or
    `budget_s` is spent (at least `min_calls`); one untimed warm-up call first."""
    fn(queries[0])
    times: list[float] = []
    spent = time.perf_counter()
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - start) * 1e3)
        if len(times) >= min_calls and time.perf_counter() - spent > budget_s:
            break
    t = np.asarray(times)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
            "calls": len(times)}  # fmt: skip


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true `k` nearest that were found (`found`, `truth`: Q x k ids; -1 = nothing)."""
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / truth.shape[1], 4)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 200_000) -> np.ndarray:
    """Ids of the `k` largest inner products per query (Q x k, best first), scanning `vectors` in chunks."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], 1)
        best_i = np.concatenate([best_i, top + start], 1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


# --- data ------------------------------------------------------------------------------------------------


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """`n x dim` float32 random directions (normal samples, L2-normalised), made in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def demo_embeddings(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """The demo model's image embeddings of `n` synthetic scenes and of `queries` held-out ones, and the
    model's images/s. Scenes: 64 px, 1-4 shapes, 30% caption/image noise (alignsam.synthetic)."""
    from alignsam.synthetic import SceneConfig, SceneGenerator
    from alignsam.tools import Encoder

    encoder = Encoder.from_pretrained("demo", batch_size=64)
    generator = SceneGenerator(SceneConfig(image_size=64, noise=0.3), seed=seed)
    images = [generator[i].image for i in range(n + queries)]
    start = time.perf_counter()
    embeds = encoder.encode_images(images).embeds.numpy().astype(np.float32)
    per_s = len(images) / (time.perf_counter() - start)
    return embeds[:n], embeds[n:], per_s


def fitted_sampler(real: np.ndarray, dim: int, seed: int) -> Callable[[int, int], np.ndarray]:
    """Sampler of vectors shaped like `real`: a Gaussian with its mean and covariance, mapped into `dim`
    dimensions by a random isometry (inner products kept), L2-normalised. `sample(n, seed)` -> n x dim."""
    mean = real.mean(0)
    chol = np.linalg.cholesky(np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1]))
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, real.shape[1])))  # dim x d, orthonormal
    lift = (chol.T @ basis.T).astype(np.float32)  # d x dim

    def sample(n: int, sample_seed: int) -> np.ndarray:
        rng = np.random.default_rng(sample_seed)
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, 100_000):
            z = rng.standard_normal((min(100_000, n - start), real.shape[1]), dtype=np.float32)
            block = z @ lift + (mean @ basis.T).astype(np.float32)
            out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    return sample


# --- engines ---------------------------------------------------------------------------------------------


class Engine:
    """One index: build on N vectors (ids 0..N-1), add more, search (Q x D -> Q x k ids), save."""

    name = ""
    widths: tuple[int, ...] = (0,)
    """Search widths to sweep (HNSW ef, IVF nprobes); (0,) for exact engines."""

    def build(self, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        raise NotImplementedError

    def set_width(self, width: int) -> None:
        pass

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        raise NotImplementedError

    def save(self, folder: Path) -> Path:
        raise NotImplementedError


class NumpyExact(Engine):
    name = "numpy exact"

    def build(self, vectors: np.ndarray) -> None:
        self.vectors = vectors  # the matrix is the index: nothing is built

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        self.vectors = np.concatenate([self.vectors, vectors])  # what `embed` + exact search pays: one copy

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        scores = queries @ self.vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        return np.take_along_axis(top, order, 1)

    def save(self, folder: Path) -> Path:
        np.save(folder / "vectors.npy", self.vectors)
        return folder / "vectors.npy"


class FaissFlat(Engine):
    name = "faiss flat"

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        self.index.add(vectors)

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        return self.index.search(queries, k)[1]

    def save(self, folder: Path) -> Path:
        import faiss

        faiss.write_index(self.index, str(folder / "flat.faiss"))
        return folder / "flat.faiss"


class FaissHNSW(FaissFlat):
    name = "faiss hnsw"
    widths = (16, 32, 64, 128, 256, 512)

    def __init__(self, m: int = 32, ef_construction: int = 64) -> None:
        self.m, self.ef_construction = m, ef_construction
        self.name = f"faiss hnsw (M={m}, efC={ef_construction})"

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(THREADS)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.ef_construction
        self.index.add(vectors)

    def set_width(self, width: int) -> None:
        self.index.hnsw.efSearch = width

    def save(self, folder: Path) -> Path:
        import faiss

        faiss.write_index(self.index, str(folder / "hnsw.faiss"))
        return folder / "hnsw.faiss"


class Usearch(Engine):
    widths = (16, 32, 64, 128, 256, 512)

    def __init__(self, dtype: str = "f32", connectivity: int = 16, expansion_add: int = 64) -> None:
        self.dtype, self.connectivity, self.expansion_add = dtype, connectivity, expansion_add
        self.name = f"usearch hnsw {dtype} (M={connectivity}, efC={expansion_add})"

    def build(self, vectors: np.ndarray) -> None:
        from usearch.index import Index

        # int8 storage quantises each unit vector's components; usearch pairs it with the cosine metric
        metric = "ip" if self.dtype != "i8" else "cos"
        self.index = Index(ndim=vectors.shape[1], metric=metric, dtype=self.dtype, connectivity=self.connectivity,
                           expansion_add=self.expansion_add)  # fmt: skip
        self.index.add(np.arange(len(vectors)), vectors, threads=THREADS)

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        self.index.add(np.arange(first_id, first_id + len(vectors)), vectors, threads=THREADS)

    def set_width(self, width: int) -> None:
        self.index.expansion_search = width

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        matches = self.index.search(queries, k, threads=THREADS if len(queries) > 1 else 1)
        return np.asarray(matches.keys).reshape(len(queries), k).astype(np.int64)

    def save(self, folder: Path) -> Path:
        self.index.save(str(folder / "index.usearch"))
        return folder / "index.usearch"


class Lance(Engine):
    """LanceDB: vectors and metadata in one table on disk; `IVF_PQ` on the vectors, refined on float32."""

    widths = (16, 64, 256)

    def __init__(self, refine_factor: int = 20) -> None:
        self.refine_factor = refine_factor
        self.name = f"lancedb ivf_pq (refine x{refine_factor})"
        self.nprobes = 20

    @staticmethod
    def _rows(vectors: np.ndarray, first_id: int) -> Any:
        import pyarrow as pa

        n, dim = vectors.shape
        ids = np.arange(first_id, first_id + n)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return pa.table({
            "id": pa.array(ids, pa.int64()),
            "path": pa.array([f"images/{i:08d}.jpg" for i in ids]),
            "width": pa.array(np.full(n, 640, np.int32)),
            "height": pa.array(np.full(n, 480, np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        })  # fmt: skip

    def build(self, vectors: np.ndarray) -> None:
        os.environ.setdefault("LANCE_LOG", "error")  # not a deprecation warning per query on stderr
        import lancedb

        self.folder = Path(tempfile.mkdtemp(prefix="lance-bench-"))
        self.table = lancedb.connect(self.folder).create_table("images", data=self._rows(vectors, 0))
        if len(vectors) >= 5_000:  # below that LanceDB scans (an index needs enough rows to train)
            self.table.create_index(metric="dot", vector_column_name="vector", index_type="IVF_PQ")

    def add(self, vectors: np.ndarray, first_id: int) -> None:
        self.table.add(self._rows(vectors, first_id))  # searched by a scan of the new rows until re-indexed

    def set_width(self, width: int) -> None:
        self.nprobes = width

    def search(self, queries: np.ndarray, k: int = K) -> np.ndarray:
        out = np.full((len(queries), k), -1, np.int64)
        query = self.table.search(list(queries) if len(queries) > 1 else queries[0], vector_column_name="vector")
        result = (query.distance_type("dot").limit(k).nprobes(self.nprobes).refine_factor(self.refine_factor)
                  .select(["id"]).to_arrow())  # fmt: skip
        ids = result["id"].to_numpy()
        rows = result["query_index"].to_numpy() if "query_index" in result.column_names else np.zeros(len(ids), int)
        for q in range(len(queries)):
            found = ids[rows == q][:k]
            out[q, : len(found)] = found
        return out

    def save(self, folder: Path) -> Path:
        return self.folder  # the table lives on disk from the start

    def __del__(self) -> None:
        folder = getattr(self, "folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


ENGINES: dict[str, Callable[[], Engine]] = {
    "numpy": NumpyExact,
    "faiss-flat": FaissFlat,
    "faiss-hnsw": FaissHNSW,
    "usearch-f32": Usearch,
    "usearch-f16": lambda: Usearch("f16"),
    "usearch-i8": lambda: Usearch("i8"),
    "lancedb": Lance,
}
ANN = ("faiss-hnsw", "usearch-f32", "usearch-f16", "usearch-i8", "lancedb")


# --- one engine on one data set --------------------------------------------------------------------------


def measure(
    key: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    extra: np.ndarray | None,
    budget_s: float,
    quick: bool = False,
) -> dict[str, Any]:
    """Build `key` on `vectors`, sweep its search widths (recall@10 of `queries` against `truth`, latency),
    then time adding `extra`. The row's headline width is the narrowest with recall >= 0.95 (else the best)."""
    release_memory()
    engine = ENGINES[key]()
    before = rss_mb()
    start = time.perf_counter()
    engine.build(vectors)
    row: dict[str, Any] = {"engine": engine.name, "n": len(vectors), "dim": vectors.shape[1],
                           "build_s": round(time.perf_counter() - start, 2),
                           "memory_mb": round(rss_mb() - before, 1)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp:
        row["disk_mb"] = round(folder_mb(engine.save(Path(tmp))), 1)
    batches = queries[: len(queries) // BATCH * BATCH].reshape(-1, BATCH, queries.shape[1])
    sweep = []
    for width in engine.widths[::2] if quick else engine.widths:
        engine.set_width(width)
        point: dict[str, Any] = {"width": width, "recall@10": recall_at_k(engine.search(queries), truth)}
        with threads(1):
            point["one"] = latencies_ms(lambda q, e=engine: e.search(q[None]), queries, budget_s)
        if len(batches):
            point["batch32"] = latencies_ms(engine.search, batches, budget_s, min_calls=3)
        sweep.append(point)
        if point["recall@10"] >= 0.999:
            break  # wider searches only cost time
    good = [p for p in sweep if p["recall@10"] >= TARGET_RECALL]
    row["chosen"] = good[0] if good else max(sweep, key=lambda p: p["recall@10"])
    if len(sweep) > 1:
        row["sweep"] = sweep
    if extra is not None:
        start = time.perf_counter()
        engine.add(extra, len(vectors))
        row["add_s"], row["added"] = round(time.perf_counter() - start, 3), len(extra)
    del engine
    release_memory()
    return row


def exact_scan_ms(sizes: list[int], budget_s: float, seed: int = 7) -> list[dict[str, Any]]:
    """numpy exact search's p50 for one query at small sizes: where it crosses the latency target."""
    queries = unit_vectors(64, DIM, seed + 1)
    out = []
    for n in sizes:
        engine = NumpyExact()
        engine.build(unit_vectors(n, DIM, seed))
        with threads(1):
            out.append({"n": n, **latencies_ms(lambda q, e=engine: e.search(q[None]), queries, budget_s)})
    return out


# --- the whole benchmark ---------------------------------------------------------------------------------


def run(
    quick: bool = False,
    sizes: list[int] | None = None,
    engines: list[str] | None = None,
    fit_engines: list[str] | None = None,
    real_engines: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    n_real: int | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All measurements as a dict (see `markdown`). `quick`: 5k vectors, a few hundred real embeddings, fewer
    search widths. `engines` run on random vectors, `fit_engines` on demo-fit ones, `real_engines` on the real
    embeddings (default: all of `engines`); `n_real` of them (default 4,000; quick 200). `checkpoint` is
    called with the results so far after each row (a long run keeps what it measured if stopped)."""
    save = checkpoint or (lambda _: None)
    say = log or (lambda _: None)
    sizes = sizes or ([5_000] if quick else [100_000, 1_000_000])
    engines = engines if engines is not None else list(ENGINES)
    fit_engines = fit_engines if fit_engines is not None else [e for e in ("faiss-hnsw", "usearch-f16") if e in engines]
    real_engines = real_engines if real_engines is not None else engines
    n_queries = 64 if quick else 256
    budget_s = 0.3 if quick else 4.0
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "threads": THREADS, "dim": DIM,
                               "sizes": sizes, "random": [], "demo_fit": [], "demo_real": []}  # fmt: skip

    n_real, q_real = (200, 32) if quick else (n_real or 4_000, 256)
    say(f"demo embeddings of {n_real + q_real} scenes")
    real, real_queries, per_s = demo_embeddings(n_real, q_real)
    results["demo_model"] = {"images": n_real, "queries": q_real, "dim": real.shape[1], "images_per_s": round(per_s, 1)}
    truth = exact_topk(real, real_queries)
    for key in real_engines:
        say(f"real embeddings: {key}")
        results["demo_real"].append(measure(key, real, real_queries, truth, None, budget_s, quick))
        save(results)
    sample = fitted_sampler(real, DIM, seed=3)

    for n in sizes:
        say(f"random unit vectors, n={n}")
        vectors, queries = unit_vectors(n, DIM, 1), unit_vectors(n_queries, DIM, 2)
        extra = unit_vectors(min(ADD, n // 10), DIM, 4)  # quick mode: a tenth of a small index
        truth = exact_topk(vectors, queries)
        for key in engines:
            say(f"random n={n}: {key}")
            results["random"].append(measure(key, vectors, queries, truth, extra, budget_s, quick))
            say(json.dumps(results["random"][-1]["chosen"]))
            save(results)
        del vectors, extra
        release_memory()
        if fit_engines:
            vectors, queries = sample(n, 5), sample(n_queries, 6)
            truth = exact_topk(vectors, queries)
            for key in fit_engines:
                say(f"demo-fit n={n}: {key}")
                results["demo_fit"].append(measure(key, vectors, queries, truth, None, budget_s, quick))
                say(json.dumps(results["demo_fit"][-1]["chosen"]))
                save(results)
            del vectors
            release_memory()

    scan = [n for n in (5_000, 10_000, 20_000, 50_000, 100_000) if n <= max(sizes)]
    results["exact_scan"] = exact_scan_ms(scan, budget_s / 2)
    results["choice"] = choose(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs made separately (e.g. 100k with every engine, 1M with the candidates)."""
    out = dict(parts[0])
    for key in ("random", "demo_fit"):
        out[key] = [row for part in parts for row in part[key]]
    out["demo_real"] = max((p["demo_real"] for p in parts), key=len)
    out["exact_scan"] = max((p.get("exact_scan", []) for p in parts), key=len)  # absent from a stopped run
    out["sizes"] = sorted({n for p in parts for n in p["sizes"]})
    out["seconds"] = round(sum(p.get("seconds", 0) for p in parts), 1)
    out["choice"] = choose(out)
    return out


def choose(results: dict[str, Any]) -> dict[str, Any]:
    """The default from the figures: the approximate engine with the lowest one-query p50 at the largest size
    among those reaching recall@10 >= 0.95 on the demo-fit vectors (or on random ones when no demo-fit row),
    and the size below which exact numpy search answers within the latency target."""
    largest = max(results["sizes"])
    rows = [r for r in results["demo_fit"] if r["n"] == largest] or [
        r for r in results["random"] if r["n"] == largest and not r["engine"].startswith(("numpy", "faiss flat"))
    ]
    good = [r for r in rows if r["chosen"]["recall@10"] >= TARGET_RECALL]
    best = min(good, key=lambda r: r["chosen"]["one"]["p50_ms"]) if good else None
    scan = results.get("exact_scan", [])
    under = [s["n"] for s in scan if s["p50_ms"] <= TARGET_P50_MS]
    threshold = max(under) if under else (min(s["n"] for s in scan) if scan else 0)
    return {
        "engine": best["engine"] if best else None,
        "width": best["chosen"]["width"] if best else None,
        "recall@10": best["chosen"]["recall@10"] if best else None,
        "p50_ms": best["chosen"]["one"]["p50_ms"] if best else None,
        "exact_below": threshold,
    }


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """The index issue's rows for the suite's targets table: (what, target, measured, met)."""
    choice = results["choice"]
    if choice["engine"] is None:
        return [("search index default: recall@10 and one-query p50", f">= {TARGET_RECALL}, <= {TARGET_P50_MS} ms",
                 "no engine reached the recall", False)]  # fmt: skip
    n = max(results["sizes"])
    met = choice["recall@10"] >= TARGET_RECALL and choice["p50_ms"] <= TARGET_P50_MS
    return [(f"search index default ({choice['engine']}) at {n:,} vectors: recall@10, one-query p50",
             f">= {TARGET_RECALL}, <= {TARGET_P50_MS} ms", f"{choice['recall@10']:.3f}, {choice['p50_ms']:.2f} ms",
             met)]  # fmt: skip


def ray_throughput(n_images: int = 512, workers: int = 2, image_size: int = 128) -> dict[str, Any]:
    """Images/s of the demo model over the same JPEG files: one process (`Encoder.encode_images`, its
    decoding threads and torch's threads) against `embed_with_ray` on a local Ray with `workers` actors of
    one thread each (Ray's start excluded, actors' model loading included). Run alone: `--ray-throughput`."""
    import ray
    from PIL import Image

    from alignsam.index.ray import embed_with_ray
    from alignsam.synthetic import SceneConfig, SceneGenerator
    from alignsam.tools import Encoder

    out: dict[str, Any] = {"images": n_images, "workers": workers, "image_size": image_size}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        generator = SceneGenerator(SceneConfig(image_size=image_size, noise=0.3), seed=11)
        paths = []
        for i in range(n_images):
            paths.append(f"{tmp}/{i:05d}.jpg")
            Image.fromarray(generator[i].image).save(paths[-1], quality=90)
        encoder = Encoder.from_pretrained("demo", batch_size=32)
        encoder.encode_images(paths[:32])  # warm-up
        start = time.perf_counter()
        single = encoder.encode_images(paths).embeds.numpy()
        out["single_process_per_s"] = round(n_images / (time.perf_counter() - start), 1)
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            list(embed_with_ray(paths[:8], "demo", workers=workers, batch_size=4))  # Ray Data's own start-up
            start = time.perf_counter()
            vectors = np.concatenate([b[1] for b in embed_with_ray(paths, "demo", workers=workers, batch_size=32)])
            out["ray_per_s"] = round(n_images / (time.perf_counter() - start), 1)
        finally:
            ray.shutdown()
        out["max_abs_diff"] = float(np.abs(vectors - single).max())
    out["ratio_ray_over_single"] = round(out["ray_per_s"] / out["single_process_per_s"], 2)
    return out


# --- the report ------------------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], with_add: bool = True) -> list[str]:
    added = next((r.get("added", ADD) for r in rows if "add_s" in r or "add_10k_s" in r), ADD)
    head = (f"| engine | n | build s | add {added:,} s | memory MB | disk MB | width | recall@10 | one p50 / p99 ms "
            "| batch 32 p50 / p99 ms |")  # fmt: skip
    lines = [head if with_add else head.replace(f" add {added:,} s |", ""), "|" + " --- |" * (10 if with_add else 9)]
    for r in rows:
        c = r["chosen"]
        batch = f"{c['batch32']['p50_ms']:.2f} / {c['batch32']['p99_ms']:.2f}" if "batch32" in c else "-"
        cells = [r["engine"], f"{r['n']:,}", f"{r['build_s']:.1f}"]
        if with_add:
            add = r.get("add_s", r.get("add_10k_s"))
            cells.append("-" if add is None else f"{add:.2f}")
        cells += [f"{r['memory_mb']:.0f}", f"{r['disk_mb']:.0f}", str(c["width"] or "-"), f"{c['recall@10']:.3f}",
                  f"{c['one']['p50_ms']:.2f} / {c['one']['p99_ms']:.2f}", batch]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sweeps(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| engine | n | width: recall@10, one-query p50 ms |", "| --- | --- | --- |"]
    for r in rows:
        if "sweep" in r:
            points = "; ".join(f"{p['width']}: {p['recall@10']:.3f}, {p['one']['p50_ms']:.2f}" for p in r["sweep"])
            lines.append(f"| {r['engine']} | {r['n']:,} | {points} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    demo = results["demo_model"]
    choice = results["choice"]
    lines = [
        "# Vector search engines for the image index",
        "",
        f"Machine: {results['machine']}; {results['threads']} threads for building and batch queries, one for "
        f"single queries. Mode: {'quick' if results['quick'] else 'full'}; total {results['seconds']:.0f} s.",
        "",
        "## Method",
        "",
        (__doc__ or "").split("\n\n    python")[0].strip(),
        "",
        "Columns: *build* is the time to index N vectors (for LanceDB: write the table and train IVF_PQ); *add "
        "10k* adds 10,000 more to the built index (numpy: a copy into a larger array; LanceDB: an append, "
        "searched by a scan until the next index optimisation); *memory* is the growth of this process's "
        "resident set during the build (numpy: 0, it searches the input array itself); *disk* is the saved "
        "index (LanceDB: the table, vectors and metadata together); *width* is the search width shown (HNSW "
        "`ef`, IVF `nprobes`), the narrowest reaching recall@10 0.95 in the sweep; latency is over "
        "single queries and batches of 32 queries.",
        "",
        f"## Random unit vectors, {results['dim']} dimensions",
        "",
        *_table(results["random"]),
    ]
    if results["demo_fit"]:
        lines += ["", f"## Demo-fit vectors, {results['dim']} dimensions (the structure of real embeddings)", "",
                  *_table(results["demo_fit"], with_add=False)]  # fmt: skip
    lines += [
        "",
        f"## The demo model's real embeddings ({demo['images']:,} images, {demo['queries']} held-out queries, "
        f"{demo['dim']} dimensions; the model ran at {demo['images_per_s']} images/s)",
        "",
        *_table(results["demo_real"], with_add=False),
        "",
        "## Recall and latency by search width",
        "",
        *_sweeps(results["random"] + results["demo_fit"] + results["demo_real"]),
        "",
        "## Exact numpy search at small sizes (one query)",
        "",
        "| n | p50 ms | p99 ms |",
        "| --- | --- | --- |",
        *[f"| {s['n']:,} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |" for s in results["exact_scan"]],
        "",
        "## Choice from these figures",
        "",
        f"- Approximate engine with the lowest one-query p50 at {max(results['sizes']):,} vectors among those "
        f"reaching recall@10 >= {TARGET_RECALL}: **{choice['engine']}** at width {choice['width']} "
        f"(recall@10 {choice['recall@10']}, p50 {choice['p50_ms']} ms; target <= {TARGET_P50_MS} ms).",
        f"- Exact numpy search answers one query within {TARGET_P50_MS} ms up to **{choice['exact_below']:,}** "
        "vectors (measured sizes above).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k vectors and a few hundred real embeddings")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 100000,1000000")
    parser.add_argument("--engines", type=lambda s: s.split(","), help=f"some of {list(ENGINES)}")
    parser.add_argument("--fit-engines", type=lambda s: [x for x in s.split(",") if x],
                        help="engines measured on demo-fit vectors too (default faiss-hnsw,usearch-f32)")  # fmt: skip
    parser.add_argument("--real-engines", type=lambda s: [x for x in s.split(",") if x],
                        help="engines measured on the real embeddings (default: --engines)")  # fmt: skip
    parser.add_argument("--real", type=int, metavar="N", help="real demo embeddings to measure (default 4000)")
    parser.add_argument("--ray-throughput", type=int, metavar="IMAGES", help="only time Ray against one process")
    parser.add_argument("--merge", type=Path, nargs="+", help="only write one report from these --json files")
    parser.add_argument("--markdown", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write all figures as JSON here")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.ray_throughput:
        print(json.dumps(ray_throughput(args.ray_throughput)))
        return
    if args.merge:
        results = merge([json.loads(path.read_text()) for path in args.merge])
    else:

        def checkpoint(partial: dict[str, Any]) -> None:
            if args.json:
                args.json.write_text(json.dumps(partial, indent=2) + "\n")

        results = run(args.quick, args.sizes, args.engines, args.fit_engines, args.real_engines, log=say,
                      n_real=args.real, checkpoint=checkpoint)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    if args.markdown:
        args.markdown.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
