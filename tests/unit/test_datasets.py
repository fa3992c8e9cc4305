import json

import pytest

from evals.datasets import DatasetError, detect_format, load_dataset, stable_task_id
from evals.metrics import split_answers


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_our_jsonl_with_given_and_generated_ids(tmp_path):
    f = write(
        tmp_path / "d.jsonl",
        json.dumps({"question": "Capital of France?", "ground_truth": ["Paris", "paris city"], "task_id": "q1"})
        + "\n"
        + "\n"
        + json.dumps({"question": "2+2?", "ground_truth": "4", "source": "math"})
        + "\n",
    )
    ds = load_dataset(f)
    assert ds.format == "jsonl"
    a, b = ds.examples
    assert a.task_id == "q1" and split_answers(a.ground_truth) == ["Paris", "paris city"]
    assert a.source == "dataset" and b.source == "math"
    assert b.task_id == stable_task_id("math", "2+2?")
    assert load_dataset(f).examples[1].task_id == b.task_id  # stable across loads
    assert b.line == 3


def test_deepresearcher_format_detected_and_alternatives_kept(tmp_path):
    rows = [
        {
            "question": "Who wrote Hamlet?",
            "ground_truth": "Shakespeare<|answer_split|>William Shakespeare",
            "data_source": "nq",
        },
        {"question": "Who wrote Hamlet?", "ground_truth": "Shakespeare", "data_source": "nq"},
    ]
    f = write(tmp_path / "dr.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(f)
    assert ds.format == "deepresearcher"
    assert [e.source for e in ds] == ["nq", "nq"]
    assert split_answers(ds.examples[0].ground_truth) == ["Shakespeare", "William Shakespeare"]
    # A repeated question gets its own stable id instead of colliding with the first copy.
    assert ds.examples[1].task_id == ds.examples[0].task_id + "-2"


def test_simpleqa_csv(tmp_path):
    f = write(
        tmp_path / "simple_qa.csv",
        "metadata,problem,answer\n"
        "\"{'topic': 'Science', 'answer_type': 'Person'}\",\"Who discovered X,\nreally?\",Marie Curie\n"
        '"{}",What year?,1999\n',
    )
    ds = load_dataset(f)
    assert ds.format == "simpleqa"
    first, second = ds.examples
    assert first.question == "Who discovered X,\nreally?" and first.ground_truth == "Marie Curie"
    assert first.metadata["topic"] == "Science" and first.source == "simpleqa"
    assert second.line == 4  # the multi-line cell of row 1 spans lines 2-3


def test_frames_csv(tmp_path):
    f = write(
        tmp_path / "frames.csv",
        ",Prompt,Answer,wikipedia_link_1,reasoning_types\n"
        "0,How old was X?,42,https://en.wikipedia.org/wiki/X,Numerical\n",
    )
    ds = load_dataset(f)
    assert ds.format == "frames"
    ex = ds.examples[0]
    assert ex.task_id == "frames-0" and ex.ground_truth == "42" and ex.source == "frames"
    assert ex.metadata["wikipedia_link_1"].endswith("/X")


def test_gaia_attachments_resolved_relative_to_metadata(tmp_path):
    folder = tmp_path / "gaia" / "validation"
    folder.mkdir(parents=True)
    (folder / "sheet.xlsx").write_bytes(b"fake")
    rows = [
        {"task_id": "g1", "Question": "Sum the column.", "Level": 1, "Final answer": "17", "file_name": "sheet.xlsx"},
        {"task_id": "g2", "Question": "No file here.", "Level": "2", "Final answer": "yes", "file_name": ""},
    ]
    f = write(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(f)
    assert ds.format == "gaia"
    g1, g2 = ds.examples
    assert g1.file_path == str((folder / "sheet.xlsx").resolve())
    assert g1.source == "gaia-L1" and g2.file_path is None
    assert str(folder / "sheet.xlsx") in g1.graph_input()["question"]


def test_malformed_rows_reported_with_line_numbers_not_skipped(tmp_path):
    f = write(
        tmp_path / "bad.jsonl",
        json.dumps({"question": "ok?", "ground_truth": "yes"})
        + "\n"
        + "{not json\n"
        + json.dumps({"ground_truth": "no question"})
        + "\n"
        + json.dumps(["a", "list"])
        + "\n"
        + json.dumps({"question": "fine", "task_id": "x"})
        + "\n"
        + json.dumps({"question": "dup", "task_id": "x"})
        + "\n"
        + json.dumps({"question": "bad truth", "ground_truth": {"a": 1}})
        + "\n",
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(f)
    lines = [e.line for e in info.value.errors]
    assert lines == [2, 3, 4, 6, 7]
    message = str(info.value)
    assert "line 2: invalid JSON" in message and "line 3: missing or empty 'question'" in message
    assert "duplicate task_id 'x' (first on line 5)" in message

    ds = load_dataset(f, skip_bad=True)
    assert [e.question for e in ds] == ["ok?", "fine"]
    assert [e.line for e in ds.errors] == lines


def test_csv_wrong_column_count_and_missing_gaia_attachment(tmp_path):
    f = write(tmp_path / "s.csv", "metadata,problem,answer\n{},Q1,A1\n{},Q2\n{},,A3\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(f)
    assert [(e.line, e.message) for e in info.value.errors] == [
        (3, "expected 3 columns, got 2"),
        (4, "missing or empty 'problem'"),
    ]
    g = write(
        tmp_path / "metadata.jsonl",
        json.dumps({"task_id": "g", "Question": "q", "Level": 1, "Final answer": "a", "file_name": "gone.pdf"}) + "\n",
    )
    with pytest.raises(DatasetError, match=r"line 1: attachment 'gone\.pdf' not found"):
        load_dataset(g)


def test_format_detection_and_explicit_format(tmp_path):
    f = write(tmp_path / "x.txt", "hello")
    with pytest.raises(DatasetError, match="unrecognised extension"):
        detect_format(f)
    g = write(tmp_path / "d.jsonl", json.dumps({"question": "q", "data_source": "nq"}) + "\n")
    assert load_dataset(g, "jsonl").examples[0].source == "dataset"  # --format wins over detection
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(g, "parquet")
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(tmp_path / "missing.jsonl")
    assert len(load_dataset(g, limit=0)) == 0


def test_real_deepresearcher_file_loads_when_present():
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "shared/data/memento/deepresearcher.jsonl"
    if not path.exists():
        pytest.skip("shared data not present")
    ds = load_dataset(path)
    assert ds.format == "deepresearcher" and len(ds) == 3197
    assert len({e.task_id for e in ds}) == len(ds)
    assert {e.source for e in ds} >= {"nq", "hotpotqa"}
