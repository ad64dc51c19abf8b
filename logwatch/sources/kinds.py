"""The built-in source types (registered in logwatch/sources/__init__.py): the file tailer,
the journal reader and stdin, each with the `sources:` keys it owns and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from logwatch.sources import SourceContext, SourceKey, SourceType
from logwatch.util import checks

if TYPE_CHECKING:
    from logwatch.daemon.config import SourcesConfig
    from logwatch.sources.journal import JournalSource
    from logwatch.sources.stdin import StdinSource
    from logwatch.sources.tail import FileTailer


def _file(sc: SourcesConfig, ctx: SourceContext) -> FileTailer:
    from logwatch.sources.tail import FileTailer

    return FileTailer(sc.logfiles, on_chunk=ctx.on_chunk, store=ctx.store,
                      from_start=sc.from_start, max_line=sc.max_line,
                      poll_interval=sc.poll_interval)


def _journal(sc: SourcesConfig, ctx: SourceContext) -> JournalSource:
    from logwatch.sources.journal import JournalSource

    return JournalSource(sc.journal_identifiers, sc.journal_units, on_chunk=ctx.on_chunk,
                         store=ctx.store, from_start=sc.from_start, max_line=sc.max_line)


def _stdin(sc: SourcesConfig, ctx: SourceContext) -> StdinSource:
    from logwatch.sources.stdin import StdinSource

    return StdinSource(ctx.on_chunk, max_line=sc.max_line)


FILE = SourceType("file", lambda sc: bool(sc.logfiles), _file, keys={
    "logfiles": SourceKey(checks.abs_paths),
    "from_start": SourceKey(),
    "poll_interval": SourceKey(checks.positive, duration=False),
})
JOURNAL = SourceType("journal", lambda sc: sc.journal, _journal, keys={
    "journal": SourceKey(),
    "journal_identifiers": SourceKey(),
    "journal_units": SourceKey(),
})
STDIN = SourceType("stdin", lambda sc: sc.stdin, _stdin, keys={"stdin": SourceKey()})
