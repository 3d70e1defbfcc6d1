"""ConceptNet as a concept source: the public API, or a local or remote dump of its assertions.

As in Label-free CBM and the Sparse-CBM paper, each word of a class name (and the
whole name, when it has several words) is looked up as an English node. Of the
edges with the chosen relations whose two ends are English, ``IsA`` gives its end
node and every other relation both ends; the looked-up term itself is never its
own concept. Labels are normalised (lower case, underscores to spaces, no leading
article).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Sequence
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.parquet as pq
import requests
from tqdm import tqdm

from sparse_cbm.runtime.atomic import atomic_directory
from sparse_cbm.concepts.http import HttpFailure, ResponseCache, RetryPolicy, open_stream, request_json
from sparse_cbm.concepts.text import lookup_terms, normalize_concept
from sparse_cbm.errors import ConceptSourceError

log = logging.getLogger(__name__)

FALLBACK = ("The public ConceptNet API is often down: set concepts.conceptnet.dump to a local copy (or URL) of "
            "ConceptNet's assertions.csv.gz to read it instead, or use concepts.source: file or llm.")


@dataclass(frozen=True)
class Edge:
    relation: str  # "IsA"
    start: str  # node id, "/c/en/dog/n"
    start_label: str
    end: str
    end_label: str
    weight: float


def term_of(node: str) -> str:
    """``/c/en/ice_cream/n/wn/food`` -> ``/c/en/ice_cream``."""
    return "/".join(node.split("/")[:4])


def label_of(node: str) -> str:
    """The text of a node id: ``/c/en/ice_cream/n`` -> ``ice cream``."""
    parts = node.split("/")
    return unquote(parts[3]).replace("_", " ") if len(parts) > 3 else ""


def term_uri(term: str) -> str:
    return f"/c/en/{term}"


def concepts_from_edges(edges: Iterable[Edge], term: str, relations: Sequence[str]) -> List[Dict]:
    """The concept rows that ``edges`` give the looked-up ``term`` (a ``/c/en/...`` URI)."""
    rows = []
    wanted = set(relations)
    for e in edges:
        if e.relation not in wanted or not (e.start.startswith("/c/en/") and e.end.startswith("/c/en/")):
            continue
        if term not in (term_of(e.start), term_of(e.end)):
            continue
        ends = [(e.end, e.end_label)] if e.relation == "IsA" else [(e.start, e.start_label), (e.end, e.end_label)]
        for node, label in ends:
            if term_of(node) == term:
                continue
            concept = normalize_concept(label or label_of(node))
            if concept:
                rows.append({"concept": concept, "relation": e.relation, "weight": float(e.weight), "node": node})
    return rows


def _ordered(rows: List[Dict]) -> List[Dict]:
    """Strongest edges first, then alphabetical: a stable order for the same answers."""
    return sorted(rows, key=lambda r: (-r["weight"], r["concept"], r["relation"], r["node"]))


# ---------------------------------------------------------------- API mode

def _check_api_answer(payload) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("edges"), list):
        raise ValueError("no 'edges' list")


def _trim(edge: dict) -> dict:
    """The parts of an API edge that we use (the cache would be ten times larger with the rest)."""
    start, end = edge.get("start") or {}, edge.get("end") or {}
    return {"rel": (edge.get("rel") or {}).get("label") or (edge.get("rel") or {}).get("@id", "").split("/")[-1],
            "start": start.get("@id", ""), "start_label": start.get("label") or "",
            "end": end.get("@id", ""), "end_label": end.get("label") or "",
            "weight": float(edge.get("weight", 1.0) or 0.0)}


def fetch_term(session: requests.Session, url: str, term: str, limit: int, cache: ResponseCache,
               policy: RetryPolicy) -> List[Edge]:
    """The edges of one English term from the API, from the cache when it was fetched before."""
    request = {"method": "GET", "url": f"{url.rstrip('/')}/c/en/{quote(term)}?limit={limit}"}
    answer = cache.get(request)
    if answer is None:
        status, payload = request_json(session, "GET", request["url"], policy=policy, accept_status=(404,),
                                       validate=_check_api_answer)
        if status == 404 or not isinstance(payload, dict):
            answer = {"status": status, "edges": []}
        else:
            answer = {"status": status, "edges": [_trim(e) for e in payload.get("edges", []) if isinstance(e, dict)]}
        cache.put(request, answer)
    if answer["status"] == 404:
        log.info("ConceptNet has no node /c/en/%s", term)
    return [Edge(e["rel"], e["start"], e["start_label"], e["end"], e["end_label"], e["weight"])
            for e in answer["edges"]]


def conceptnet_api_concepts(classes: Sequence[str], *, url: str, relations: Sequence[str], limit: int,
                            cache_dir: str | Path, policy: RetryPolicy,
                            session: requests.Session | None = None) -> List[Dict]:
    """Concept rows for every class from the ConceptNet API (answers cached in ``cache_dir``)."""
    session = session or requests.Session()
    cache = ResponseCache(cache_dir)
    rows = []
    for index, name in enumerate(tqdm(classes, desc="conceptnet", unit="class")):
        found = []
        for term in lookup_terms(name):
            try:
                edges = fetch_term(session, url, term, limit, cache, policy)
            except HttpFailure as exc:
                raise ConceptSourceError(f"ConceptNet lookup of '{term}' for class '{name}' failed: {exc.reason}. "
                                         f"Answers fetched so far are cached; a rerun resumes. {FALLBACK}") from None
            found += concepts_from_edges(edges, term_uri(term), relations)
        if not found:
            log.warning("class '%s': ConceptNet gave no concepts", name)
        rows += [{**r, "class_index": index, "source": "conceptnet"} for r in _ordered(found)]
    return rows


# ---------------------------------------------------------------- dump mode

def _dump_identity(dump: str) -> str:
    if dump.startswith(("http://", "https://")):
        return dump
    path = Path(dump)
    if not path.is_file():
        raise ConceptSourceError(f"concepts.conceptnet.dump: {dump} not found. Download ConceptNet's "
                                 f"assertions.csv.gz (see docs/usage.md#concepts) and give its path, or its URL.")
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _lines(raw: io.BufferedIOBase, name: str) -> Iterator[str]:
    stream = gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else raw
    yield from io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")


def scan_dump(lines: Iterable[str], terms: set) -> Iterator[tuple]:
    """Edges of ``assertions.csv`` lines (URI, relation, start, end, JSON) that touch ``terms``,
    both ends English, as (relation, start, end, weight). Streams: never holds the file."""
    for line in lines:
        parts = line.rstrip("\n").split("\t", 4)
        if len(parts) < 5:
            continue
        start, end = parts[2], parts[3]
        if not (start.startswith("/c/en/") and end.startswith("/c/en/")):
            continue
        if term_of(start) not in terms and term_of(end) not in terms:
            continue
        try:
            weight = float(json.loads(parts[4]).get("weight", 1.0))
        except (ValueError, AttributeError):
            weight = 1.0
        yield parts[1].rsplit("/", 1)[-1], start, end, weight


def _extract(dump: str, terms: set, policy: RetryPolicy, session: requests.Session | None) -> pa.Table:
    found: Dict[str, list] = {"relation": [], "start": [], "end": [], "weight": []}
    if dump.startswith(("http://", "https://")):
        try:
            response = open_stream(session or requests.Session(), dump, policy=policy)
        except HttpFailure as exc:
            raise ConceptSourceError(f"cannot download the ConceptNet dump {dump}: {exc.reason}. Download it "
                                     f"by hand and set concepts.conceptnet.dump to its local path.") from None
        total = int(response.headers.get("Content-Length") or 0) or None
        raw = response.raw
    else:
        total, raw = os.path.getsize(dump), open(dump, "rb")
    try:
        with tqdm.wrapattr(raw, "read", total=total, desc="conceptnet dump", unit="B", unit_scale=True) as counted:
            for relation, start, end, weight in scan_dump(_lines(counted, dump.split("?")[0]), terms):
                for key, value in zip(found, (relation, start, end, weight)):
                    found[key].append(value)
    except (OSError, EOFError, requests.RequestException) as exc:
        raise ConceptSourceError(f"reading the ConceptNet dump {dump} failed ({type(exc).__name__}: {exc}). "
                                 f"Nothing was cached; a rerun starts the scan again.") from None
    finally:
        raw.close()
    return pa.table(found, schema=pa.schema([("relation", pa.string()), ("start", pa.string()),
                                             ("end", pa.string()), ("weight", pa.float64())]))


def conceptnet_dump_concepts(classes: Sequence[str], *, dump: str, relations: Sequence[str], cache_dir: str | Path,
                             policy: RetryPolicy, session: requests.Session | None = None) -> List[Dict]:
    """Concept rows for every class from a ConceptNet assertions dump.

    The edges touching the classes' terms (every relation) are cached in
    ``cache_dir/<sha256>.parquet``, keyed by the dump's identity and the terms, so a
    rerun, or a change of relations, does not read the dump again.
    """
    per_class = [lookup_terms(name) for name in classes]
    terms = sorted({term_uri(t) for ts in per_class for t in ts})
    key = hashlib.sha256(json.dumps({"dump": _dump_identity(dump), "terms": terms}).encode()).hexdigest()
    cached = Path(cache_dir) / key / "edges.parquet"
    if not cached.is_file():
        log.info("scanning %s for %d terms (streamed; the edges found are cached)", dump, len(terms))
        table = _extract(dump, set(terms), policy, session)
        with atomic_directory(cached.parent) as tmp:
            pq.write_table(table, tmp / "edges.parquet")
    edges_by_term: Dict[str, List[Edge]] = {}
    for rel, start, end, weight in zip(*pq.read_table(cached).to_pydict().values()):
        edge = Edge(rel, start, label_of(start), end, label_of(end), weight)
        for t in {term_of(start), term_of(end)}:
            edges_by_term.setdefault(t, []).append(edge)
    rows = []
    for index, (name, ts) in enumerate(zip(classes, per_class)):
        found = []
        for t in ts:
            found += concepts_from_edges(edges_by_term.get(term_uri(t), []), term_uri(t), relations)
        if not found:
            log.warning("class '%s': the ConceptNet dump gave no concepts", name)
        rows += [{**r, "class_index": index, "source": "conceptnet"} for r in _ordered(found)]
    return rows
