"""The literal matchers: every line holding a literal is reported with that literal's bit, in
line order; hyperscan exactly, re as a superset; choosing and falling back between them."""

import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.parsing import literalscan
from logwatch.parsing.literalscan import (
    HyperscanMatcher,
    PivotMatcher,
    hyperscan_available,
    make_matcher,
    plan_scans,
)
from logwatch.parsing.rules import default_rules_dirs, load_ruleset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from maillog import generate  # noqa: E402
from matchers import MATCHERS  # noqa: E402
from needs import require  # noqa: E402

LITERALS = load_ruleset(default_rules_dirs()).literals


def truth(chunk: bytes, literals) -> tuple[list[int], list[int]]:
    """Line starts and literal bit sets of the lines holding a literal, the slow way."""
    starts, masks, pos = [], [], 0
    for line in chunk.split(b"\n"):
        mask = sum(1 << i for i, lit in enumerate(literals) if lit in line)
        if mask:
            starts.append(pos)
            masks.append(mask)
        pos += len(line) + 1
    return starts, masks


def checked(chunk: bytes, literals, starts, masks) -> tuple[list[int], list[int]]:
    """A matcher's answer with each bit checked against its line (what the parser does)."""
    out_starts, out_masks = [], []
    for start, mask in zip(starts, masks, strict=True):
        end = chunk.find(b"\n", start)
        line = chunk[start:end if end >= 0 else len(chunk)]
        kept = sum(1 << i for i, lit in enumerate(literals) if mask >> i & 1 and lit in line)
        if kept:
            out_starts.append(start)
            out_masks.append(kept)
    return out_starts, out_masks


def test_hyperscan_is_installed_where_required():
    # Without it only the re matcher is tested; make check installs it, so CI fails here.
    require("hyperscan")
    assert hyperscan_available()


@pytest.mark.parametrize("matcher", MATCHERS)
def test_every_literal_anywhere_in_a_line_is_reported(matcher):
    m = make_matcher(LITERALS, matcher)
    for i, lit in enumerate(LITERALS):
        for chunk in (lit, lit + b"\n", b"x\n" + lit, b"a " + lit + b" b\nnext\n",
                      b"one\ntwo " + lit + b"\nthree " + lit + b"\n"):
            starts, masks = m.candidates(chunk)
            want = truth(chunk, LITERALS)
            assert checked(chunk, LITERALS, starts, masks) == want, (lit, chunk)
            assert all(mask >> i & 1 for mask in want[1])
            if m.exact:
                assert (starts, masks) == want


@pytest.mark.parametrize("matcher", MATCHERS)
def test_a_generated_log_gives_the_exact_lines_and_literals(matcher):
    chunk = generate(20_000, seed=4) + b"Nov 21 10:00:00 mx x: Relay access denied; User unknown"
    m = make_matcher(LITERALS, matcher)
    starts, masks = m.candidates(chunk)
    want = truth(chunk, LITERALS)
    assert len(want[0]) > 1000
    if m.exact:
        assert (starts, masks) == want
    else:
        assert set(want[0]) <= set(starts)
        assert checked(chunk, LITERALS, starts, masks) == want


@pytest.mark.parametrize("matcher", MATCHERS)
@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(LITERALS[:20]),
                          st.sampled_from([b"\n", b"\x00", b"\xff\n"])), max_size=30))
def test_hostile_bytes_never_break_the_matchers(matcher, parts):
    chunk = b"".join(parts)
    m = make_matcher(LITERALS, matcher)
    starts, masks = m.candidates(chunk)
    assert checked(chunk, LITERALS, starts, masks) == truth(chunk, LITERALS)


def test_re_matcher_needs_few_passes_and_replans_on_the_log():
    m = PivotMatcher(LITERALS)
    static = m.passes
    m.candidates(generate(5000, seed=2))
    assert m.passes <= static + 3 and m.passes < len(LITERALS) / 3


def test_make_matcher_choices(monkeypatch, caplog):
    assert isinstance(make_matcher(LITERALS, "re"), PivotMatcher)
    with pytest.raises(ValueError, match="not one of"):
        make_matcher(LITERALS, "grep")
    if hyperscan_available():
        assert isinstance(make_matcher(LITERALS, "auto"), HyperscanMatcher)
        assert isinstance(make_matcher(LITERALS, "hyperscan"), HyperscanMatcher)

        def broken(literals):
            raise RuntimeError("no SSSE3 here")

        monkeypatch.setattr(literalscan, "HyperscanMatcher", broken)
        with caplog.at_level(logging.WARNING):
            assert isinstance(make_matcher(LITERALS, "auto"), PivotMatcher)
        assert "hyperscan unusable (no SSSE3 here)" in caplog.text
        with pytest.raises(RuntimeError, match="SSSE3"):
            make_matcher(LITERALS, "hyperscan")
    monkeypatch.setattr(literalscan, "_hyperscan", None)
    assert isinstance(make_matcher(LITERALS, "auto"), PivotMatcher)
    with pytest.raises(RuntimeError, match="not installed"):
        make_matcher(LITERALS, "hyperscan")


@pytest.mark.parametrize("sample", [b"", generate(2000, seed=2)])
def test_scans_find_every_literal(sample):
    literals = list(LITERALS) + [b"abc", b"xy", b"LOGIN FAILED"]
    plan = plan_scans(literals, sample)
    assert {lit for _, lits in plan for lit in lits} == set(literals)
    for scan, lits in plan:
        for lit in lits:    # each literal, alone in a line, is found by its scan
            assert scan.search(b"...." + lit + b"...."), (scan.pattern, lit)
    assert len(plan) < len(literals) / 3
