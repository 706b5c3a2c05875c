"""Tests for nsa_tutorial.files: the one rule for every file the package writes."""

import json

import pytest

from nsa_tutorial.files import (atomic_write, check_output, plain_name, read_result, remove_temporaries,
                                write_json)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})

    def half_then_crash(tmp):
        tmp.write_text('{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_temporaries_live_in_the_target_folder_and_are_removable(tmp_path):
    seen = []
    atomic_write(tmp_path / "x.txt", lambda tmp: (seen.append(tmp), tmp.write_text("x")))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".x.txt.")  # same folder: rename is atomic
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"  # what a killed process leaves
    stale.write_bytes(b"half")
    someone_elses = tmp_path / ".notes.tmp"
    someone_elses.write_text("not ours")
    assert remove_temporaries(tmp_path, ["checkpoint.pt", "model.pt"]) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "x.txt"]


def test_an_existing_result_is_replaced_only_when_asked(tmp_path):
    path = write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    write_json(path, {"v": 2}, overwrite=True)
    assert json.loads(path.read_text()) == {"v": 2}


def test_an_input_is_never_overwritten_even_when_asked(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    for output in (model, tmp_path / "." / "model.pt"):
        with pytest.raises(ValueError, match="input"):
            check_output(output, overwrite=True, inputs=[model])
    assert model.read_bytes() == b"weights"


def test_no_path_outside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="outside the output folder"):
        check_output(out / ".." / "escaped.json", within=out)
    with pytest.raises(ValueError, match="outside"):
        check_output(tmp_path / "elsewhere.json", within=out)
    assert check_output(out / "a" / "b.json", within=out) == out / "a" / "b.json"
    assert (out / "a").is_dir()  # the parent is made


def test_a_folder_is_not_a_file_to_write(tmp_path):
    with pytest.raises(IsADirectoryError, match="folder"):
        check_output(tmp_path, overwrite=True)


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", ".", "", "a\\b"])
def test_plain_name_refuses_paths(name):
    with pytest.raises(ValueError, match="plain name"):
        plain_name(name, "category")


def test_a_done_marker_is_trusted_only_when_it_parses_and_is_complete(tmp_path):
    path = tmp_path / "metrics.json"
    assert read_result(path) == (None, "")  # missing: not done, nothing to say
    path.write_text('{"image_auroc": 0.9, "pixel_')  # half written by a crash
    result, why = read_result(path, ["image_auroc"])
    assert result is None and str(path) in why and "half written" in why
    path.write_text("[1, 2]")
    assert read_result(path)[0] is None
    path.write_text('{"image_auroc": 0.9}')
    result, why = read_result(path, ["image_auroc", "au_pro"])
    assert result is None and "au_pro" in why
    assert read_result(path, ["image_auroc"]) == ({"image_auroc": 0.9}, "")


def test_atomic_write_gives_the_permissions_of_an_ordinary_write(tmp_path):
    """A temporary file is private (0600); the result must not be: a new file gets what the umask
    allows (as open() would give it), a replaced file keeps its own mode."""
    import os
    import stat

    old_umask = os.umask(0o022)
    try:
        fresh = atomic_write(tmp_path / "new.json", lambda tmp: tmp.write_text("{}"))
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "shared.json"
        kept.write_text("old")
        kept.chmod(0o664)
        atomic_write(kept, lambda tmp: tmp.write_text("new"))
        assert stat.S_IMODE(kept.stat().st_mode) == 0o664 and kept.read_text() == "new"
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write(tmp_path / "private.json", lambda t: t.write_text("")).stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)
