"""The whitelist change watcher, with real inotify."""

import errno
import os
import select

from logwatch.sources import filewatch
from logwatch.sources.filewatch import FileWatch


def readable(watch: FileWatch, timeout: float = 2.0) -> bool:
    return bool(select.select([watch.fileno()], [], [], timeout)[0])


def test_write_rename_and_delete_are_seen(tmp_path):
    path = tmp_path / "whitelist"
    path.write_text("# empty\n")
    watch = FileWatch(str(path))
    try:
        assert watch.fileno() is not None
        assert not watch.changed()
        path.write_text("192.0.2.0/24\n")
        assert readable(watch) and watch.changed()
        # Editors save by writing a new file and renaming it over the old one.
        tmp = tmp_path / ".whitelist.swp"
        tmp.write_text("198.51.100.0/24\n")
        assert readable(watch)
        assert not watch.changed()          # only the temp file so far
        os.replace(tmp, path)
        assert readable(watch) and watch.changed()
        path.unlink()
        assert readable(watch) and watch.changed()
        path.write_text("10.0.0.0/8\n")     # and it may come back
        assert readable(watch) and watch.changed()
    finally:
        watch.close()


def test_other_files_in_the_directory_do_not_count(tmp_path):
    path = tmp_path / "whitelist"
    path.write_text("")
    watch = FileWatch(str(path))
    try:
        (tmp_path / "whitelist.bak").write_text("x\n")
        (tmp_path / "other").write_text("x\n")
        assert readable(watch)
        assert not watch.changed()
    finally:
        watch.close()


def test_without_inotify_it_reports_no_fd(tmp_path, monkeypatch):
    def refuse() -> None:
        raise OSError(errno.EMFILE, "too many inotify instances")

    monkeypatch.setattr(filewatch, "Inotify", refuse)
    watch = FileWatch(str(tmp_path / "whitelist"))
    assert watch.fileno() is None and not watch.changed()


def test_missing_directory_falls_back(tmp_path):
    watch = FileWatch(str(tmp_path / "nope" / "whitelist"))
    assert watch.fileno() is None
