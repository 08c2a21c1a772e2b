"""`ImageIndex`: an index folder that grows by batches, survives being killed, and is searched exactly
below a size and approximately above it.

    DIR/index.sqlite        metadata and vectors, one transaction per batch (`alignsam.index.store`)
    DIR/ann-<gen>.usearch   the HNSW graph over the vectors of generation <gen> (`alignsam.index.ann`)
    DIR/write.lock          held by the one process writing

A search reads one generation in one read transaction: the rows committed when it started, whatever a
writer does meanwhile. Above `exact_below` vectors it asks the ANN file named by that generation and
searches exactly the rows committed since that file was built (the "delta"), so a reader never waits for a
rebuild and never misses a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alignsam.errors import InputError, UsageError
from alignsam.index import ann, store
from alignsam.index.embedding import Batch, embed_local, embed_remote
from alignsam.index.filters import Where, parse_filter
from alignsam.validation import check_count

EXACT_BELOW = 20_000
"""Collections smaller than this are searched exactly (numpy: 3 ms a query at 20,000 vectors of 640
dimensions on 2 cores, recall 1); larger ones through the HNSW index (benchmarks/index_engines.md)."""

ANN_DELTA = 10_000
"""Rows added or removed since the HNSW file was built that trigger its update at the end of an `add` (or
5% of the rows, whichever is fewer); below that the newer rows are searched exactly beside it."""

DEFAULT_DEDUPE = 0.95
"""Cosine at and above which two images count as near-duplicates."""

Engine = Literal["local", "ray"]


def model_key(model: str | os.PathLike[str]) -> str:
    """How an index records its model: a local folder or file by its absolute path, anything else (a
    bundled name, a hub id) as given."""
    text = os.fspath(model)
    return str(Path(text).resolve()) if os.path.exists(text) else text


def file_hash(path: bytes) -> str:
    """The content hash the index keeps (BLAKE2b, 128 bits, hex)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass
class _Snapshot:
    """What a reader keeps of one generation: every vector (exact mode) or the ANN and the delta."""

    generation: int
    count: int
    ids: np.ndarray  # N (exact: all rows; ANN: the delta)
    vectors: np.ndarray  # N x D
    ann: Any = None
    ann_generation: int = 0


class ImageIndex:
    """An index folder (see the module docstring). Open it with `ImageIndex.open(folder)`; `create=True`
    makes a new one. One process writes at a time (`add`, `prune`, `reindex`); any number read."""

    def __init__(self, folder: Path, conn: Any, *, exact_below: int = EXACT_BELOW) -> None:
        self.folder = folder
        self.conn = conn
        self.exact_below = exact_below
        self._snapshot: _Snapshot | None = None
        self._lock = threading.RLock()  # one connection: its transactions must not interleave

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], *, create: bool = False, exact_below: int = EXACT_BELOW
    ) -> ImageIndex:
        """The index in `folder`; an `InputError` in one line if it is not one or is corrupt (the folder is
        then left untouched). `create`: start an empty index there if there is none."""
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise InputError(f"'{path}' exists and is not a folder; name a folder for the index.")
        return cls(path, store.connect(path, create=create), exact_below=exact_below)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> dict[str, Any]:
        """The manifest: model, dim, normalized, metric, engine, format, generation, and the ANN file."""
        with self._lock:
            return store.read_info(self.conn)

    @property
    def model(self) -> str | None:
        return self.info.get("model")

    @property
    def dim(self) -> int:
        return int(self.info.get("dim", 0))

    def __len__(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT count(*) FROM images").fetchone()[0])

    def holds(self, path: str) -> bool:
        """Whether `path` (as search results give it) is a file of the index."""
        with self._lock:
            return self.conn.execute("SELECT 1 FROM images WHERE path=?", (os.fsencode(path),)).fetchone() is not None

    def vectors_of_paths(self, paths: Sequence[str]) -> dict[str, np.ndarray]:
        """path -> its vector (`D` float32) for those of `paths` the index holds, in one read transaction."""
        out: dict[str, np.ndarray] = {}
        with self._lock, store.transaction(self.conn, write=False):
            dim = int(store.read_info(self.conn).get("dim", 0))
            for start in range(0, len(paths), 900):
                part = [os.fsencode(p) for p in paths[start : start + 900]]
                marks = ",".join("?" * len(part))
                rows = self.conn.execute(
                    f"SELECT path, vector FROM images JOIN vectors USING (id) WHERE path IN ({marks})", part
                ).fetchall()
                for (raw, _), vector in zip(rows, store.vectors_of(rows, dim), strict=True):
                    out[store.display_path(bytes(raw))] = vector
        return out

    def check_model(self, model: str) -> None:
        """Refuse, in one line, to mix in vectors of a model other than the one the index was built with."""
        held = self.model
        if held is not None and held != model_key(model):
            raise InputError(
                f"The index '{self.folder}' was built with the model '{held}' ({self.dim} dimensions), not "
                f"'{model_key(model)}'; add with --model {held}, or build another index. The index was left untouched."
            )

    # --- writing -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The folder's write lock (one writer at a time) and the cleaning of what a killed writer left."""
        fd = os.open(self.folder / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    f"Another process is writing the index '{self.folder}'; try again when it is done."
                ) from None
            for leftover in self.folder.glob(".ann-*.partial"):  # an ANN file a killed writer did not finish
                leftover.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)  # releases the lock

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        model: str,
        encoder: Any = None,
        recursive: bool = True,
        engine: Engine = "local",
        address: str | None = None,
        workers: int = 2,
        batch_size: int = 32,
        captions: Mapping[str, Mapping[str, Any]] | None = None,
        tags: Sequence[str] = (),
        progress: bool = False,
    ) -> dict[str, Any]:
        """Embed the images under `paths` (files and folders) that the index does not hold as they are now.

        A file whose size and modification time are unchanged is skipped; one whose content hash is
        unchanged too only has its time updated; any other is embedded again (a new row replaces the old).
        Each batch is committed with its vectors in one transaction, so a run stopped at any moment keeps
        every batch before it and a rerun goes on from there.

        Args:
            model: the ALIGN model (as for `Encoder.from_pretrained`); recorded in a new index, and an
                index of another model is refused.
            encoder: the `Encoder` of `model` for the local engine (None: loaded here).
            engine: "local" (this process) or "ray" (`alignsam.index.ray`, to `address` or a local Ray).
            captions: absolute path -> {"caption": str, "tags": [str]} to store with the files.
            tags: tags for every file of this call.
        Returns: counts (`added`, `updated`, `unchanged`, `touched`), `errors` (files that could not be
        read, skipped and listed), `ignored_files`, `images` (the index's size) and `images_per_second`.
        """
        from alignsam.tools.files import list_images

        if engine not in ("local", "ray"):
            raise UsageError(f"Unknown engine '{engine}'; use 'local' or 'ray'.")
        self.check_model(model)
        found = list_images(paths, recursive=recursive)
        extra = {k: dict(v) for k, v in (captions or {}).items()}
        with self._lock, self._writing():
            plan = self._plan([os.path.abspath(p) for p in found.files], extra, list(tags))
            if engine == "local":
                if encoder is None:
                    from alignsam.tools.encoder import Encoder

                    encoder = Encoder.from_pretrained(model, batch_size=batch_size, workers=workers)
                batches: Iterator[Batch] = embed_local(plan.todo, encoder, batch_size=batch_size)
            else:
                batches = embed_remote(plan.todo, model, address=address, workers=workers, batch_size=batch_size)
            report = {"added": 0, "updated": 0, "unchanged": plan.unchanged, "touched": plan.touched}
            errors: list[dict[str, str]] = []
            start = time.perf_counter()
            from alignsam.tools.batches import progress_bar

            with progress_bar(len(plan.todo), "images", progress) as bar, _ahead(batches) as ahead:
                for batch in ahead:
                    added, updated, failed = self._commit(batch, model, extra, list(tags))
                    report["added"] += added
                    report["updated"] += updated
                    errors.extend({"image": store.printable(p), "error": m} for p, m in failed)
                    bar.update(len(batch[0]) + len(batch[3]))
            seconds = time.perf_counter() - start
            self._publish_ann()
        embedded = report["added"] + report["updated"]
        return {
            **report,
            "errors": errors,
            "ignored_files": found.ignored,
            "images": len(self),
            "seconds": round(seconds, 3),
            "images_per_second": round(embedded / seconds, 2) if seconds > 0 and embedded else None,
        }

    @dataclasses.dataclass
    class _Plan:
        todo: list[str]
        unchanged: int
        touched: int

    def _plan(self, files: list[str], extra: dict[str, dict[str, Any]], tags: list[str]) -> ImageIndex._Plan:
        """Which files need embedding; files whose content is unchanged get their new time, caption and
        tags now (one transaction)."""
        held = {
            bytes(row[0]): row[1:]
            for row in self.conn.execute("SELECT path, id, size, mtime_ns, hash, caption, tags FROM images")
        }
        todo: list[str] = []
        unchanged = touched = 0
        updates: list[tuple[Any, ...]] = []
        for path in files:
            raw = os.fsencode(path)
            row = held.get(raw)
            if row is None:
                todo.append(path)
                continue
            row_id, size, mtime_ns, digest, caption, tag_text = row
            try:
                st = os.stat(raw)
            except OSError:
                todo.append(path)  # reported by the engine, which cannot read it either
                continue
            new_caption, new_tags = _describe(path, extra, tags, caption, tag_text)
            if (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
                unchanged += 1
            elif st.st_size == size and file_hash(raw) == digest:  # touched, not changed
                touched += 1
            else:
                todo.append(path)
                continue
            if (st.st_mtime_ns, new_caption, new_tags) != (mtime_ns, caption, tag_text):
                updates.append((st.st_mtime_ns, new_caption, new_tags, row_id))
        if updates:
            with store.transaction(self.conn):
                self.conn.executemany("UPDATE images SET mtime_ns=?, caption=?, tags=? WHERE id=?", updates)
        return ImageIndex._Plan(todo, unchanged, touched)

    def _commit(
        self, batch: Batch, model: str, extra: dict[str, dict[str, Any]], tags: list[str]
    ) -> tuple[int, int, list[tuple[str, str]]]:
        """One batch in one transaction: its rows (replacing older rows of the same files), the removed ids,
        the new generation. Returns (added, updated, failures)."""
        paths, vectors, dims, failures = batch
        failed = list(failures)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(paths) != len(vectors) or len(paths) != len(dims):
            raise InputError(f"The embedding engine returned {len(vectors)} vectors for {len(paths)} paths.")
        rows: list[tuple[Any, ...]] = []
        for path, vector, (width, height) in zip(paths, vectors, dims, strict=True):
            raw = os.fsencode(path)
            try:  # what the file is now: it was read a moment ago, so this read comes from the page cache
                st = os.stat(raw)
                digest = file_hash(raw)
            except OSError as err:
                failed.append((path, f"'{path}' could not be read: {err.strerror or err}"))
                continue
            caption, tag_text = _describe(path, extra, tags, None, None)
            rows.append((raw, st.st_size, st.st_mtime_ns, digest, width, height, caption, tag_text, vector))
        if not rows and not failed:
            return 0, 0, failed
        added = updated = 0
        with store.transaction(self.conn):
            info = store.read_info(self.conn)
            if rows:
                dim = int(vectors.shape[1])
                if "model" not in info:  # the first batch names the model of a new index
                    store.set_info(self.conn, model=model_key(model), dim=dim, normalized="true", metric="cosine")
                elif info["model"] != model_key(model) or info["dim"] != dim:
                    raise InputError(
                        f"The index '{self.folder}' holds {info['dim']}-dimensional vectors of '{info['model']}'; "
                        f"this run gives {dim}-dimensional vectors of '{model_key(model)}'. The index was left "
                        "untouched."
                    )
            gen = info["generation"] + 1
            for raw, size, mtime_ns, digest, width, height, caption, tag_text, vector in rows:
                old = self.conn.execute("SELECT id FROM images WHERE path=?", (raw,)).fetchone()
                if old is not None:
                    self.conn.execute("DELETE FROM images WHERE id=?", (old[0],))
                    self.conn.execute("DELETE FROM vectors WHERE id=?", (old[0],))
                    self.conn.execute("INSERT OR REPLACE INTO removed VALUES (?, ?)", (old[0], gen))
                    updated += 1
                else:
                    added += 1
                unit = vector / max(float(np.linalg.norm(vector)), 1e-12)  # stored L2-normalised, whatever came
                cursor = self.conn.execute(
                    "INSERT INTO images (path, size, mtime_ns, hash, width, height, caption, tags, gen) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (raw, size, mtime_ns, digest, int(width), int(height), caption, tag_text, gen),
                )
                self.conn.execute(
                    "INSERT INTO vectors VALUES (?, ?)",
                    (cursor.lastrowid, np.ascontiguousarray(unit, dtype=np.float32).tobytes()),
                )
            store.set_info(self.conn, generation=gen)
        return added, updated, failed

    def prune(self) -> list[str]:
        """Drop the rows whose files are gone; returns their paths."""
        with self._lock, self._writing():
            rows = self.conn.execute("SELECT id, path FROM images").fetchall()
            gone = [(row_id, bytes(raw)) for row_id, raw in rows if not os.path.exists(raw)]
            if gone:
                with store.transaction(self.conn):
                    gen = store.read_info(self.conn)["generation"] + 1
                    self.conn.executemany("DELETE FROM images WHERE id=?", [(i,) for i, _ in gone])
                    self.conn.executemany("DELETE FROM vectors WHERE id=?", [(i,) for i, _ in gone])
                    self.conn.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(i, gen) for i, _ in gone])
                    store.set_info(self.conn, generation=gen)
                self._publish_ann()
        return [store.printable(store.display_path(raw)) for _, raw in gone]

    def reindex(self) -> None:
        """Rebuild the ANN file from the stored vectors (after it was damaged or deleted)."""
        with self._lock, self._writing():
            self._publish_ann(rebuild=True)

    def _publish_ann(self, rebuild: bool = False) -> None:
        """Bring the ANN file up to the current generation (or drop it below `exact_below` vectors).

        A file that misses at most `ANN_DELTA` of the rows, and at most 5% of them, is kept: searches cover
        the rows committed since exactly, and rewriting a graph of millions for a few new images would cost
        more than it saves."""
        info = store.read_info(self.conn)
        count = len(self)
        old = info.get("ann_file") or ""
        if count < self.exact_below:
            if old:
                with store.transaction(self.conn):
                    store.set_info(self.conn, ann_file="", ann_generation=0, ann_count=0)
            self._clean_ann(keep=set())
            return
        gen = info["generation"]
        if old and not rebuild:
            since = info.get("ann_generation", 0)
            behind = self.conn.execute("SELECT count(*) FROM images WHERE gen > ?", (since,)).fetchone()[0]
            dead = self.conn.execute("SELECT count(*) FROM removed WHERE gen > ?", (since,)).fetchone()[0]
            if since == gen or behind + dead <= min(ANN_DELTA, count // 20):
                return
        index = None
        if old and not rebuild:
            try:
                index = ann.load(self.folder / old, info["dim"], info.get("ann_count", 0), view=False)
            except InputError:
                index = None  # damaged: built again from the vectors
        since = 0 if index is None else info.get("ann_generation", 0)
        if index is None:
            index = ann.new_index(info["dim"])
        else:
            dead = [r[0] for r in self.conn.execute("SELECT id FROM removed WHERE gen > ?", (since,))]
            dead = [i for i in dead if index.contains(i)]
            if dead:
                index.remove(np.asarray(dead, dtype=np.uint64))
        cursor = self.conn.execute(
            "SELECT id, vector FROM images JOIN vectors USING (id) WHERE gen > ? AND gen <= ? ORDER BY id", (since, gen)
        )
        while chunk := cursor.fetchmany(8192):
            index.add(np.asarray([r[0] for r in chunk], dtype=np.uint64), store.vectors_of(chunk, info["dim"]))
        name = ann.publish(index, self.folder, gen)
        with store.transaction(self.conn):
            store.set_info(self.conn, ann_file=name, ann_generation=gen, ann_count=len(index))
        self._clean_ann(keep={name, old})  # the previous file stays for readers that are opening it now

    def _clean_ann(self, keep: set[str]) -> None:
        for path in self.folder.glob("ann-*.usearch"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------------------

    def _snapshot_in(self, info: dict[str, Any]) -> _Snapshot:
        """The snapshot of the generation in `info`, inside the caller's read transaction (cached)."""
        snap = self._snapshot
        if snap is not None and snap.generation == info["generation"]:
            return snap
        dim = int(info.get("dim", 0))
        count = int(self.conn.execute("SELECT count(*) FROM images").fetchone()[0])
        name = info.get("ann_file") or ""
        if name:
            index = ann.load(self.folder / name, dim, info.get("ann_count", 0))
            since = info.get("ann_generation", 0)
            rows = self.conn.execute(
                "SELECT id, vector FROM images JOIN vectors USING (id) WHERE gen > ? ORDER BY id", (since,)
            ).fetchall()
            snap = _Snapshot(info["generation"], count, _ids(rows), store.vectors_of(rows, dim, 1), index, since)
        else:
            rows = self.conn.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall()
            snap = _Snapshot(info["generation"], count, _ids(rows), store.vectors_of(rows, dim, 1))
        self._snapshot = snap
        return snap

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Snapshot]:
        """A read transaction and the snapshot of its generation."""
        with self._lock:
            for attempt in range(3):
                with store.transaction(self.conn, write=False):
                    info = store.read_info(self.conn)
                    try:
                        snap = self._snapshot_in(info)
                    except InputError:
                        # the ANN file named here may have been replaced and deleted since: read again
                        if attempt == 2:
                            raise
                        continue
                    yield snap
                    return

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        where: str | Where | None = None,
        dedupe: float | None = None,
    ) -> list[list[dict[str, Any]]]:
        """The `k` best images for each L2-normalised query (`Q x D`, numpy or torch): per query a list of
        `{"path", "score", "id", "width", "height", "size", "mtime", "caption", "tags"}`, best first.

        where: a filter (`alignsam.index.filters`, e.g. "width >= 512 AND path LIKE '%/beach/%'").
        dedupe: drop a result whose cosine with a better one is at least this (near-duplicates).
        """
        check_count(k, "k")
        q = np.asarray(queries.detach().cpu() if hasattr(queries, "detach") else queries, dtype=np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        clause = parse_filter(where) if isinstance(where, str) else where
        if dedupe is not None and not 0.0 < dedupe <= 1.0:
            raise UsageError(f"The near-duplicate threshold must be in (0, 1], got {dedupe}.")
        with self._reading() as snap:
            dim = store.read_info(self.conn).get("dim")
            if snap.count == 0:
                return [[] for _ in q]
            if q.shape[1] != dim:
                raise InputError(
                    f"The index holds {dim}-dimensional vectors but the queries are {q.shape[1]}-dimensional: it "
                    "was built with another model; search it with that model."
                )
            fetch = k * (4 if dedupe else 1)
            out = []
            for row in q:
                ids, scores = self._candidates(snap, row, fetch, clause)
                if dedupe:
                    ids, scores = self._dedupe_hits(ids, scores, dedupe)
                out.append(self._describe_hits(ids[:k], scores[:k]))
            return out

    def _candidates(
        self, snap: _Snapshot, query: np.ndarray, fetch: int, where: Where | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best `fetch` (id, cosine) for one query, best first."""
        if snap.ann is None:
            ids, scores = snap.ids, snap.vectors @ query  # every score, then the filter: no copy of the vectors
            if where is not None:
                keep = np.isin(ids, self._ids_where(where), assume_unique=True)
                ids, scores = ids[keep], scores[keep]
            return _top(ids, scores, fetch)
        if where is not None:
            allowed = self._ids_where(where)
            if len(allowed) < self.exact_below:  # a selective filter: exactly, over the rows it leaves
                return self._exact_over(allowed, query, fetch)
        over = fetch * (8 if where is not None else 2)  # rows gone or filtered out since the ANN was built
        keys, scores = ann.search(snap.ann, query[None], min(over, max(len(snap.ann), 1)))
        keys, scores = keys[0], scores[0]
        found = keys >= 0
        keys, scores = keys[found], scores[found]
        live = self._ids_where(where, among=keys)
        keep = np.isin(keys, live)
        delta_ids, delta_scores = _top(snap.ids, snap.vectors @ query, fetch)
        if where is not None and len(delta_ids):
            ok = np.isin(delta_ids, self._ids_where(where, among=delta_ids))
            delta_ids, delta_scores = delta_ids[ok], delta_scores[ok]
        # The graph holds float16 vectors: rescore its candidates on the stored float32 ones, so a score is the
        # same whichever path found the row (and the order among near ties is the exact one).
        graph_ids = keys[keep]
        stored = self._vectors(graph_ids)
        graph_scores = np.array([float(stored[int(i)] @ query) for i in graph_ids], dtype=np.float32)
        ids = np.concatenate([graph_ids, delta_ids])
        merged = np.concatenate([graph_scores, delta_scores])
        if len(ids) < fetch and len(keys) == over:  # too few left after filtering: exactly, over them all
            return self._exact_over(self._ids_where(where), query, fetch)
        return _top(ids, merged, fetch)

    def _ids_where(self, where: Where | None, among: np.ndarray | None = None) -> np.ndarray:
        """Ids of the live rows matching `where` (all rows when None), optionally only those `among`."""
        sql, params = "SELECT id FROM images", ()
        clauses = []
        if where is not None:
            clauses.append(where.sql)
            params = where.params
        if among is not None:
            if len(among) == 0:
                return np.empty(0, np.int64)
            clauses.append(f"id IN ({','.join(str(int(i)) for i in among)})")  # our own integers, not user text
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        return np.fromiter((r[0] for r in self.conn.execute(sql, params)), dtype=np.int64)

    def _vectors(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        dim = int(store.read_info(self.conn)["dim"])
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), 900):
            part = ",".join(str(int(i)) for i in ids[start : start + 900])
            rows = self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({part})").fetchall()
            for (row_id, _), vector in zip(rows, store.vectors_of(rows, dim), strict=True):
                out[int(row_id)] = vector
        return out

    def _exact_over(self, ids: np.ndarray, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = self._vectors(ids)
        order = np.fromiter(vectors, dtype=np.int64, count=len(vectors))
        matrix = np.stack([vectors[i] for i in order]) if len(order) else np.empty((0, len(query)), np.float32)
        return _top(order, matrix @ query, fetch)

    def _dedupe_hits(self, ids: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Greedily keep a hit unless its cosine with a better kept hit is >= `threshold`."""
        vectors = self._vectors(ids)
        kept: list[int] = []
        for pos, row_id in enumerate(ids):
            v = vectors[int(row_id)]
            if all(float(v @ vectors[int(ids[j])]) < threshold for j in kept):
                kept.append(pos)
        return ids[kept], scores[kept]

    def _describe_hits(self, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        if len(ids) == 0:
            return []
        cols = ", ".join(store.META_COLUMNS)
        part = ",".join(str(int(i)) for i in ids)
        rows = {r[0]: r for r in self.conn.execute(f"SELECT {cols} FROM images WHERE id IN ({part})")}
        out = []
        for row_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            meta = store.metadata(rows[row_id])
            out.append({"path": store.printable(meta.pop("path")), "score": round(float(score), 6), **meta})
        return out

    def dedupe(self, threshold: float = DEFAULT_DEDUPE) -> list[dict[str, Any]]:
        """Groups of near-duplicates (images linked by cosine >= `threshold`, transitively), largest first:
        `{"paths": [...], "ids": [...], "min_score": lowest linking cosine}`."""
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"The near-duplicate threshold must be in (0, 1], got {threshold}.")
        with self._lock, store.transaction(self.conn, write=False):
            rows = self.conn.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall()
            dim = int(store.read_info(self.conn).get("dim", 0))
        ids = _ids(rows)
        vectors = store.vectors_of(rows, dim, 1)
        parent = list(range(len(ids)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        links: dict[int, float] = {}
        for i, j, score in _close_pairs(vectors, threshold, self.exact_below):
            a, b = root(i), root(j)
            if a != b:
                parent[b] = a
            links[i] = min(links.get(i, 1.0), score)
            links[j] = min(links.get(j, 1.0), score)
        groups: dict[int, list[int]] = {}
        for i in links:
            groups.setdefault(root(i), []).append(i)
        with self._lock:
            paths = {
                r[0]: store.printable(store.display_path(r[1]))
                for r in self.conn.execute("SELECT id, path FROM images")
            }
        out = [
            {
                "paths": [paths[int(ids[i])] for i in sorted(members)],
                "ids": [int(ids[i]) for i in sorted(members)],
                "min_score": round(min(links[i] for i in members), 6),
            }
            for members in groups.values()
            if len(members) > 1
        ]
        return sorted(out, key=lambda g: (-len(g["ids"]), g["ids"][0]))

    def query(
        self,
        encoder: Any,
        specs: Sequence[str],
        k: int = 10,
        *,
        where: str | None = None,
        dedupe: float | None = None,
    ) -> dict[str, Any]:
        """Search by text, image or composed queries written as `alignsam search` takes them (`"a red car"`,
        `"image:a.jpg + text:at night"`, `alignsam.tools.similarity`); `{"results": [{"query", "results"}],
        "errors"}`."""
        from alignsam.tools.similarity import embed_items, parse_items

        clause = parse_filter(where) if where is not None else None  # a bad filter fails before any embedding
        embedded = embed_items(encoder, parse_items(list(specs)))
        hits = self.search(embedded.embeds, k, where=clause, dedupe=dedupe) if embedded.names else []
        return {
            "results": [{"query": n, "results": h} for n, h in zip(embedded.names, hits, strict=True)],
            "errors": embedded.errors,
        }


def _describe(
    path: str, extra: dict[str, dict[str, Any]], tags: list[str], caption: str | None, tag_text: str | None
) -> tuple[str | None, str | None]:
    """(caption, tags as JSON) for a file: what `extra` says about it and `tags`, over what it had."""
    given = extra.get(path, {})
    if "caption" in given:
        caption = str(given["caption"])
    have = json.loads(tag_text) if tag_text else []
    new = [str(t) for t in given.get("tags", [])] + list(tags)
    merged = have + [t for t in dict.fromkeys(new) if t not in have]
    return caption, (json.dumps(merged, ensure_ascii=False) if merged else None)


def _ids(rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def _top(ids: np.ndarray, scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The `count` best (id, score), best first; ties by id, so results are stable."""
    if len(ids) == 0:
        return ids.astype(np.int64), scores.astype(np.float32)
    if count < len(ids):  # the best `count` (and all tied with the last of them), then sorted
        cut = np.partition(scores, len(scores) - count)[len(scores) - count]
        best = np.flatnonzero(scores >= cut)
        ids, scores = ids[best], scores[best]
    order = np.lexsort((ids, -scores))[:count]
    return ids[order], scores[order]


def _close_pairs(vectors: np.ndarray, threshold: float, exact_below: int) -> Iterable[tuple[int, int, float]]:
    """(i, j, cosine) for the rows i < j with cosine >= `threshold`: exactly in blocks below `exact_below`
    rows, else each row's 16 nearest neighbours through a temporary HNSW index."""
    n = len(vectors)
    if n < exact_below:
        for start in range(0, n, 1024):
            block = vectors[start : start + 1024] @ vectors.T  # B x N
            rows, cols = np.nonzero(block >= threshold)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if start + r < c:
                    yield start + r, c, float(block[r, c])
        return
    index = ann.new_index(vectors.shape[1])
    index.add(np.arange(n, dtype=np.uint64), vectors)
    keys, scores = ann.search(index, vectors, 16)
    for i in range(n):
        for j, s in zip(keys[i].tolist(), scores[i].tolist(), strict=True):
            if j > i and s >= threshold:
                yield i, j, float(s)


@contextlib.contextmanager
def _ahead(batches: Iterator[Batch], depth: int = 2) -> Iterator[Iterator[Batch]]:
    """`batches`, computed in a thread up to `depth` ahead, so that the engine embeds the next batch while
    this one is hashed and committed. An error in the engine is raised here."""
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        box.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(done)
        except BaseException as err:  # handed to the consumer, which raises it
            box.put(err)

    thread = threading.Thread(target=run, name="alignsam-index-embed", daemon=True)
    thread.start()

    def items() -> Iterator[Batch]:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    try:
        yield items()
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                box.get_nowait()
        thread.join(timeout=5)
