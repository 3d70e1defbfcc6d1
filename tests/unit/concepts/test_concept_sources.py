"""Concept files and the concept table."""

import pandas as pd
import pytest

from sparse_cbm.concepts.files import read_concept_file
from sparse_cbm.concepts.table import SCHEMA, concept_table, read_concept_table, write_concept_table
from sparse_cbm.errors import ConceptSourceError

CLASSES = ["dog", "hot dog", "crème brûlée", "dog"]


def test_text_file_gives_shared_concepts(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# my concepts\nFur\n\n  a Tail \nfur\n", encoding="utf-8")
    rows = read_concept_file(path, CLASSES)
    table = concept_table(rows, CLASSES)
    assert table.column("concept").to_pylist() == ["fur", "tail"]
    assert table.column("class_index").to_pylist() == [-1, -1] and table.column("class_name").to_pylist() == [None, None]


def test_csv_matches_class_names_loosely_and_by_index(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("class,concept\nThe Dog,tail\nHOT DOG,bun\ncrème brûlée,caramel\n1,sausage\n,shared\n"
                    "dog,tail\n", encoding="utf-8")
    table = concept_table(read_concept_file(path, CLASSES), CLASSES).to_pandas()
    assert table[["class_index", "concept"]].values.tolist() == [[0, "tail"], [1, "bun"], [2, "caramel"],
                                                               [1, "sausage"], [-1, "shared"]]
    assert table["class_name"].tolist()[:3] == ["dog", "hot dog", "crème brûlée"]


def test_parquet_file(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"class_name": ["dog", "hot dog"], "concept": ["paw", "mustard"]}).to_parquet(path)
    rows = read_concept_file(path, CLASSES)
    assert [(r["class_index"], r["concept"]) for r in rows] == [(0, "paw"), (1, "mustard")]


@pytest.mark.parametrize("content, message", [
    ("class,concept\ndgo,tail\n", "class 'dgo' is not a class of the dataset. Did you mean 'dog'"),
    ("class,concept\n9,tail\n", "class index 9 is out of range"),
    ("klass,text\ndog,tail\n", "has no 'concept' column"),
])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConceptSourceError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_concept_file(path, CLASSES)


def test_missing_file(tmp_path):
    with pytest.raises(ConceptSourceError, match="not found"):
        read_concept_file(tmp_path / "nope.csv", CLASSES)


def test_table_round_trip_keeps_the_schema(tmp_path):
    rows = [{"class_index": 0, "concept": "Tail", "source": "conceptnet", "relation": "HasA", "weight": 2.0,
             "node": "/c/en/tail"}, {"class_index": 0, "concept": "tail", "source": "conceptnet"}]
    table = concept_table(rows, CLASSES)
    assert table.num_rows == 1 and table.schema == SCHEMA
    write_concept_table(table.to_pandas(), tmp_path / "t.parquet")
    (back,) = read_concept_table(tmp_path / "t.parquet").to_dict("records")
    assert pd.isna(back.pop("prompt"))
    assert back == {"class_index": 0, "class_name": "dog", "concept": "tail", "source": "conceptnet",
                    "relation": "HasA", "weight": 2.0, "node": "/c/en/tail"}


def test_sources_are_looked_up_in_the_registry_in_the_order_of_the_params_choices():
    from types import SimpleNamespace

    from sparse_cbm_app.concept_sources import SOURCES, concept_rows
    from sparse_cbm_app.params import CONCEPT_SOURCES

    assert SOURCES.names() == CONCEPT_SOURCES == ("conceptnet", "llm", "file", "attributes")
    with pytest.raises(ConceptSourceError, match=r"unknown concepts.source 'lmm' \(did you mean 'llm'\?\)"):
        concept_rows(SimpleNamespace(source="lmm"), None, "unused")
