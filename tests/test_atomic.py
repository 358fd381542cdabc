import pytest

from vaerun.core.atomic import atomic_path, write_text_atomically


def test_the_file_appears_whole_or_the_old_one_stays(tmp_path):
    target = tmp_path / "metrics.json"
    write_text_atomically(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no partial file left behind
    write_text_atomically(target, "new")
    assert target.read_text() == "new"


def test_the_partial_file_keeps_the_extension_for_writers_that_go_by_it(tmp_path):
    with atomic_path(tmp_path / "summary.png") as partial:
        assert partial.suffix == ".png" and partial.parent == tmp_path
        partial.write_bytes(b"png")
