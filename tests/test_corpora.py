import json

import pytest

from featureflow.config import DomainSource
from featureflow.pipeline.corpora import CorpusError, domain_documents, split_documents
from featureflow.pipeline.corpora.generators import generate


def test_generators_are_deterministic_and_varied():
    a = list(generate("lua", 20000, 1))
    assert a == list(generate("lua", 20000, 1))
    assert a != list(generate("lua", 20000, 2))
    assert len(set(a)) == len(a)  # no repeated documents


def test_lua_carries_the_structures_the_paper_studies():
    text = "".join(generate("lua", 200000, 0))
    for s in ("local ", " = ", "end", "~=", " .. ", "pcall(function()", "function ", "return ", "\n  "):
        assert s in text, s


def test_english_and_stories_carry_dialogue_and_punctuation():
    eng = "".join(generate("babylm", 50000, 0))
    sto = "".join(generate("tinystories", 50000, 0))
    assert "?" in eng and ":" in eng and "\n" in eng
    assert 'said, "' in sto and "Once upon a time" in sto


def test_python_from_stdlib_has_try_except():
    docs = domain_documents("python", DomainSource(chars=300000), 0)
    text = "".join(docs)
    assert "except" in text and "def " in text and "import " in text


def test_local_loaders(tmp_path):
    (tmp_path / "a.lua").write_text("local x = 1\nreturn x\n")
    (tmp_path / "b.lua").write_text("local y = 2\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "hello there"}) + "\n" + json.dumps({"text": "bye"}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["def f():\n    pass\n", "x = 1\n"]}), tmp_path / "d.parquet")
    assert domain_documents("lua", DomainSource(source="files", paths=[str(tmp_path / "*.lua")]), 0) == [
        "local x = 1\nreturn x\n", "local y = 2\n"]
    assert domain_documents("babylm", DomainSource(source="files", paths=[str(tmp_path / "c.jsonl")]), 0) == [
        "hello there", "bye"]
    assert domain_documents("python", DomainSource(source="files", paths=[str(tmp_path / "d.parquet")],
                                                   text_field="content"), 0)[1] == "x = 1\n"


def test_loader_errors_name_the_file(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(CorpusError, match="no field 'text'"):
        domain_documents("lua", DomainSource(source="files", paths=[str(tmp_path / "c.jsonl")]), 0)
    with pytest.raises(CorpusError, match="matches no file"):
        domain_documents("lua", DomainSource(source="files", paths=[str(tmp_path / "*.nothing")]), 0)


def test_split_is_deterministic_and_disjoint():
    docs = [f"doc {i}" for i in range(100)]
    tr, va = split_documents(docs, 0.1, 0, "lua")
    assert (tr, va) == split_documents(docs, 0.1, 0, "lua")
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 100


def test_datasets_loader_on_local_files_of_the_papers_schema(tmp_path, monkeypatch):
    """The `hf` source runs the real `datasets` code; offline it reads local files of TinyStories' schema."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    f = tmp_path / "tinystories-train.jsonl"
    f.write_text("".join(json.dumps({"text": f"Once upon a time {i}."}) + "\n" for i in range(50)))
    src = DomainSource(source="hf", dataset="json", data_files=[str(f)], chars=100)
    docs = domain_documents("tinystories", src, 0)
    assert docs[0] == "Once upon a time 0." and 100 <= sum(map(len, docs)) < 130
    bad = DomainSource(source="hf", dataset="json", data_files=[str(f)], text_field="story", chars=100)
    with pytest.raises(CorpusError, match="no field 'story'"):
        domain_documents("tinystories", bad, 0)
