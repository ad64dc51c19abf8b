"""logwatch.daemon.logbatch: the log lines of one batch of effects leave in one write at its end,
in order, even when the batch fails; outside a batch every line is written at once."""

from __future__ import annotations

import io
import logging

import pytest

from logwatch.daemon.logbatch import BatchingHandler, held


class Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logger():
    log = logging.getLogger("lwd-logbatch-test")
    log.propagate, log.level = False, logging.INFO
    stream = Writes()
    inner = logging.StreamHandler(stream)
    inner.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(BatchingHandler(inner))
    yield log, stream
    log.handlers.clear()


def test_a_batch_is_one_write_in_order(logger) -> None:
    log, stream = logger
    log.info("before")
    assert stream.writes == ["INFO before\n"]
    with held(log.name):
        log.info("action=relay-add ip=%s", "192.0.2.1")
        log.warning("second")
        with held(log.name):            # nested: still the outer batch's
            log.info("action=grant ip=192.0.2.1")
        assert stream.writes == ["INFO before\n"]          # nothing yet
    assert stream.writes[1:] == ["INFO action=relay-add ip=192.0.2.1\nWARNING second\n"
                                 "INFO action=grant ip=192.0.2.1\n"]
    log.info("after")
    assert stream.writes[-1] == "INFO after\n"


def test_a_failing_batch_still_logs(logger) -> None:
    log, stream = logger
    with pytest.raises(RuntimeError), held(log.name):
        log.error("action=firewall-error error=x")
        raise RuntimeError("boom")
    assert stream.getvalue() == "ERROR action=firewall-error error=x\n"


def test_other_handlers_get_each_record_at_the_end() -> None:
    log = logging.getLogger("lwd-logbatch-test-2")
    log.propagate, log.level = False, logging.INFO
    seen: list[str] = []

    class Datagrams(logging.Handler):     # like SysLogHandler: one message per record
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    log.addHandler(BatchingHandler(Datagrams()))
    try:
        with held(log.name):
            log.info("a")
            log.info("b")
            assert seen == []
        assert seen == ["a", "b"]
    finally:
        log.handlers.clear()
