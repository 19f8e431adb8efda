"""An interrupt that lands between an output folder's creation and the caller's ``with``
(the signal held while the folder was made is delivered there) leaves no folder: the
CLI's last step, and the process's exit, remove this process's temporary folders."""
from __future__ import annotations

from repinterp.app.outputs import output_folder, release_locks


def test_a_temporary_folder_never_entered_is_removed_by_the_release(tmp_path):
    cm = output_folder(tmp_path / "out")
    tmp = cm.__enter__()                # made; the interrupt comes before the with body
    (tmp / "report.html").write_text("half")
    assert tmp.is_dir() and tmp.name.startswith(".out.tmp-")
    release_locks()
    assert not tmp.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_folder_swapped_in_is_not_touched_by_the_release(tmp_path):
    with output_folder(tmp_path / "out") as tmp:
        (tmp / "report.html").write_text("done")
    release_locks()
    assert (tmp_path / "out" / "report.html").read_text() == "done"
