"""ccs_ray.files: table files of every supported format, relative URIs, atomic writes."""

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccs_ray.files import atomic_write, read_table_file, resolve_uri


def test_csv_empty_string_is_null(tmp_path):
    (tmp_path / "t.csv").write_text("uri,label\na.jpg,cat\nb.jpg,\n")
    assert read_table_file(str(tmp_path / "t.csv")).to_pylist() == [
        {"uri": "a.jpg", "label": "cat"}, {"uri": "b.jpg", "label": None}]


def test_tsv(tmp_path):
    (tmp_path / "t.TSV").write_text("uri\tlabel\na.jpg\tcat, black\n")
    assert read_table_file(str(tmp_path / "t.TSV")).to_pylist() == [{"uri": "a.jpg", "label": "cat, black"}]


def test_parquet(tmp_path):
    pq.write_table(pa.table({"uri": ["a.jpg", "b.jpg"], "n": [1, 2]}), tmp_path / "t.parquet")
    assert read_table_file(str(tmp_path / "t.parquet")).to_pylist() == [{"uri": "a.jpg", "n": 1},
                                                                         {"uri": "b.jpg", "n": 2}]


def test_json_list_and_jsonl(tmp_path):
    rows = [{"video": "v0", "caption": "a"}, {"video": "v1"}]  # a missing key is a null
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    expected = [{"video": "v0", "caption": "a"}, {"video": "v1", "caption": None}]
    assert read_table_file(str(tmp_path / "t.json")).to_pylist() == expected
    assert read_table_file(str(tmp_path / "t.jsonl")).to_pylist() == expected


def test_json_column_of_a_string_or_a_list_is_all_lists(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps([{"caption": "one"}, {"caption": ["two", "three"]}, {"caption": None}]))
    table = read_table_file(str(tmp_path / "t.json"))
    assert table.column("caption").to_pylist() == [["one"], ["two", "three"], None]


def test_unsupported_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="unsupported table file"):
        read_table_file(str(tmp_path / "t.xlsx"))
    (tmp_path / "t.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="list of objects"):
        read_table_file(str(tmp_path / "t.json"))


def test_resolve_uri():
    assert resolve_uri("img/../img/1.jpg", "/data/set") == "/data/set/img/1.jpg"
    assert resolve_uri("img/1.jpg", "data/set/") == "data/set/img/1.jpg"
    assert resolve_uri("1.jpg", "/") == "/1.jpg"
    assert resolve_uri("img/1.jpg", "memory://root/set") == "memory://root/set/img/1.jpg"
    assert resolve_uri("img/1.jpg", "s3://b/set/") == "s3://b/set/img/1.jpg"
    assert resolve_uri("s3://other/1.jpg", "/data/set") == "s3://other/1.jpg"
    assert resolve_uri("/abs/1.jpg", "memory://root/set") == "/abs/1.jpg"


def test_atomic_write_memory_uri():
    fs = fsspec.filesystem("memory")
    uri = "memory://test_files_atomic/new/folder/out.bin"
    try:
        atomic_write(uri, b"first")
        atomic_write(uri, b"second")  # replaces
        with fsspec.open(uri, "rb") as f:
            assert f.read() == b"second"
        assert fs.ls("/test_files_atomic/new/folder", detail=False) == ["/test_files_atomic/new/folder/out.bin"]
    finally:
        fs.rm("/test_files_atomic", recursive=True)


def test_atomic_write_local(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("fail_at", ["write", "move"])
def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch, fail_at):
    """A full disk (ENOSPC while writing, or while moving into place): the error reaches the caller, the
    target is untouched and no ``*.tmp`` is left beside it."""
    from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

    target = tmp_path / "part.parquet"
    target.write_bytes(b"old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_at == "write":
        monkeypatch.setattr(LocalFileOpener, "write", disk_full)
    else:
        monkeypatch.setattr(LocalFileSystem, "mv", disk_full)
    with pytest.raises(OSError, match=f"^no space left on device while writing {target}$") as e:
        atomic_write(str(target), b"new")
    assert e.value.errno == 28  # the storage's errno is kept
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["part.parquet"]
