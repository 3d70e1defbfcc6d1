"""ConceptNet: API mode through a loopback server speaking its format, and dump mode."""

import gzip
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from sparse_cbm.concepts.conceptnet import conceptnet_api_concepts, conceptnet_dump_concepts, scan_dump
from sparse_cbm.concepts.http import RetryPolicy
from sparse_cbm.concepts.text import lookup_terms, normalize_concept
from sparse_cbm.errors import ConceptSourceError
from tests.fake_servers import FakeServer, conceptnet_404, conceptnet_answer, edge, html_reply, json_reply

FIXTURE = Path(__file__).parent / "fixtures" / "conceptnet_c_en_example.json"
RELATIONS = ["HasA", "IsA", "PartOf", "HasProperty", "MadeOf", "AtLocation"]
GRAPH = {
    "dog": [edge("IsA", "dog", "animal", 3.0), edge("IsA", "poodle", "dog", 2.0), edge("HasA", "dog", "tail", 2.0),
            edge("AtLocation", "dog", "kennel", 1.0), edge("RelatedTo", "dog", "cat", 5.0),
            edge("HasA", "dog", "queue", 1.0, end_lang="fr"), edge("PartOf", "paw", "dog", 1.5)],
    "hot_dog": [edge("MadeOf", "hot_dog", "sausage", 2.0), edge("IsA", "hot_dog", "food", 1.0)],
    "hot": [edge("HasProperty", "fire", "hot", 1.0)],
    "café": [edge("AtLocation", "coffee", "café", 1.0)],
}


def fast_policy(total=3.0):
    return RetryPolicy(total_seconds=total, timeout=2.0, base_delay=0.01, max_delay=0.05)


def conceptnet(method, path, body, headers):
    term = unquote(urlparse(path).path).split("/c/en/", 1)[1]
    if term == "example":
        return json_reply(json.loads(FIXTURE.read_text()))
    if term not in GRAPH:
        return json_reply(conceptnet_404(term), 404)
    return json_reply(conceptnet_answer(term, GRAPH[term]))


def concepts_of(rows, index):
    return [r["concept"] for r in rows if r["class_index"] == index]


def test_normalisation_and_lookup_terms():
    assert normalize_concept("The_Big  Wheel.") == "big wheel"
    assert normalize_concept("An apple") == "apple" and normalize_concept("a") == "a"
    assert lookup_terms("Hot dog") == ["hot_dog", "hot", "dog"]
    assert lookup_terms("cat/kitten") == ["cat_kitten", "cat", "kitten"]
    assert lookup_terms("café") == ["café"]


def test_api_mode_applies_relations_languages_and_directions(tmp_path):
    with FakeServer(conceptnet) as srv:
        rows = conceptnet_api_concepts(["dog", "hot dog", "café", "unknownthing"], url=srv.url,
                                       relations=RELATIONS, limit=50, cache_dir=tmp_path, policy=fast_policy())
    # IsA keeps its end ("poodle IsA dog" gives nothing), others both ends; RelatedTo and French edges are out
    assert concepts_of(rows, 0) == ["animal", "tail", "paw", "kennel"]
    hot_dog = concepts_of(rows, 1)
    assert {"sausage", "food", "fire", "animal", "tail"} <= set(hot_dog) and "hot dog" not in hot_dog
    assert concepts_of(rows, 2) == ["coffee"]
    assert concepts_of(rows, 3) == []  # a 404 node is an answer, not an error
    first = next(r for r in rows if r["concept"] == "animal")
    assert first == {"concept": "animal", "relation": "IsA", "weight": 3.0, "node": "/c/en/animal",
                     "class_index": 0, "source": "conceptnet"}
    assert any("limit=50" in r["path"] for r in srv.requests)


def test_real_answer_fixture(tmp_path):
    with FakeServer(conceptnet) as srv:
        rows = conceptnet_api_concepts(["example"], url=srv.url, relations=["RelatedTo", "Synonym", "IsA"],
                                       limit=5, cache_dir=tmp_path, policy=fast_policy())
    # the Arabic and Japanese synonyms go; "sample IsA example" gives its end, the term itself
    assert concepts_of(rows, 0) == ["exemplary", "instance"]


def test_rerun_makes_no_calls_and_a_failed_run_resumes(tmp_path):
    calls = {"n": 0}

    def flaky(method, path, body, headers):
        calls["n"] += 1
        if "/c/en/dog" in path and calls.setdefault("dog_failed", 0) == 0:
            calls["dog_failed"] = 1
            return html_reply(502)
        return conceptnet(method, path, body, headers)

    with FakeServer(flaky) as srv:
        with pytest.raises(ConceptSourceError) as exc:
            conceptnet_api_concepts(["hot dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                    policy=RetryPolicy(total_seconds=0, timeout=2))
        message = str(exc.value)
        assert "'dog' for class 'hot dog'" in message and "HTTP 502 (an HTML page)" in message
        assert "concepts.conceptnet.dump" in message and "concepts.source: file" in message
        done_before = len(list(tmp_path.glob("*.json")))
        assert done_before == 2  # hot_dog and hot were answered and kept; no half-written file
        assert not list(tmp_path.glob(".*"))
        served = len(srv.requests)
        conceptnet_api_concepts(["hot dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                policy=fast_policy())
        assert len(srv.requests) == served + 1  # only the failed term is asked again
        conceptnet_api_concepts(["hot dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                policy=fast_policy())
        assert len(srv.requests) == served + 1


@pytest.mark.parametrize("reply", [
    json_reply({"edges": "not a list"}), (200, {"Content-Type": "application/json"}, b"{truncated"),
    html_reply(500), json_reply({}, 429, {"Retry-After": "1"}), ("sleep", 1.5, json_reply({"edges": []})),
])
def test_bad_answers_end_in_a_clear_error(tmp_path, reply):
    with FakeServer(lambda *a: reply) as srv:
        with pytest.raises(ConceptSourceError) as exc:
            conceptnet_api_concepts(["dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                    policy=RetryPolicy(total_seconds=0.5, timeout=0.5, base_delay=0.1))
    assert "class 'dog'" in str(exc.value) and "gave up after" in str(exc.value)
    assert not list(tmp_path.glob("*.json"))


def test_empty_edge_lists_give_no_concepts(tmp_path):
    with FakeServer(lambda *a: json_reply(conceptnet_answer("x", []))) as srv:
        rows = conceptnet_api_concepts(["dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                       policy=fast_policy())
    assert rows == []


def write_dump(path: Path) -> Path:
    lines = []
    for edges in GRAPH.values():
        for e in edges:
            rel, start, end = e["rel"]["@id"], e["start"]["@id"] + "/n", e["end"]["@id"]
            lines.append(f"{e['@id']}\t{rel}\t{start}\t{end}\t{json.dumps({'weight': e['weight']})}\n")
    lines.append("/a/[x]\t/r/IsA\t/c/en/zebra\t/c/en/horse\t{\"weight\": 1.0}\n")  # touches no class
    lines.append("garbage line\n")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def test_dump_mode_matches_api_mode_and_caches_the_scan(tmp_path):
    dump = write_dump(tmp_path / "assertions.csv.gz")
    classes = ["dog", "hot dog", "café"]
    rows = conceptnet_dump_concepts(classes, dump=str(dump), relations=RELATIONS, cache_dir=tmp_path / "c",
                                    policy=fast_policy())
    with FakeServer(conceptnet) as srv:
        api = conceptnet_api_concepts(classes, url=srv.url, relations=RELATIONS, limit=50, cache_dir=tmp_path / "a",
                                      policy=fast_policy())
    key = ("class_index", "concept", "relation", "weight")
    assert sorted(tuple(r[k] for k in key) for r in rows) == sorted(tuple(r[k] for k in key) for r in api)
    cached = list((tmp_path / "c").rglob("edges.parquet"))
    assert len(cached) == 1
    with gzip.open(dump, "wt") as fh:  # the same file name with new content is read again
        fh.write("/a/[y]\t/r/HasA\t/c/en/dog\t/c/en/fur\t{\"weight\": 1.0}\n")
    again = conceptnet_dump_concepts(["dog"], dump=str(dump), relations=RELATIONS, cache_dir=tmp_path / "c",
                                     policy=fast_policy())
    assert concepts_of(again, 0) == ["fur"] and len(list((tmp_path / "c").rglob("edges.parquet"))) == 2
    with pytest.raises(ConceptSourceError, match="missing not found"):
        conceptnet_dump_concepts(classes, dump=str(dump) + ".missing", relations=RELATIONS,
                                 cache_dir=tmp_path / "c", policy=fast_policy())


def test_dump_mode_streams_from_a_url(tmp_path):
    data = write_dump(tmp_path / "assertions.csv.gz").read_bytes()
    with FakeServer(lambda *a: (200, {"Content-Type": "application/gzip"}, data)) as srv:
        rows = conceptnet_dump_concepts(["dog"], dump=srv.url + "/assertions.csv.gz", relations=RELATIONS,
                                        cache_dir=tmp_path / "c", policy=fast_policy())
    assert concepts_of(rows, 0) == ["animal", "tail", "paw", "kennel"]


def test_scan_dump_is_a_stream():
    lines = iter(["a\t/r/IsA\t/c/en/dog\t/c/en/animal\t{}\n"] * 3)
    found = scan_dump(lines, {"/c/en/dog"})
    assert next(found) == ("IsA", "/c/en/dog", "/c/en/animal", 1.0)
    assert len(list(lines)) == 2  # the rest was not read yet


def test_duplicate_class_names_share_one_call(tmp_path):
    with FakeServer(conceptnet) as srv:
        rows = conceptnet_api_concepts(["dog", "Dog"], url=srv.url, relations=RELATIONS, limit=5,
                                       cache_dir=tmp_path, policy=fast_policy())
    assert len(srv.requests) == 1 and concepts_of(rows, 0) == concepts_of(rows, 1) != []


def test_a_crash_while_storing_an_answer_leaves_nothing_half_written(tmp_path, monkeypatch):
    import os

    real_replace = os.replace

    def crash(src, dst):
        raise KeyboardInterrupt  # as if the process was stopped between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with FakeServer(conceptnet) as srv:
        with pytest.raises(KeyboardInterrupt):
            conceptnet_api_concepts(["dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                    policy=fast_policy())
        assert list(tmp_path.iterdir()) == []
        monkeypatch.setattr(os, "replace", real_replace)
        rows = conceptnet_api_concepts(["dog"], url=srv.url, relations=RELATIONS, limit=5, cache_dir=tmp_path,
                                       policy=fast_policy())
    assert concepts_of(rows, 0) == ["animal", "tail", "paw", "kennel"] and len(list(tmp_path.iterdir())) == 1
