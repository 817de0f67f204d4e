"""Loading YAML and JSON safely, with lines for every error."""

from __future__ import annotations

import time

import pytest

from compose_gen.spec import SpecError, parse_text
from compose_gen.spec.source import load_source


def error_of(text: str, name: str = "spec.yaml", json_syntax: bool = False) -> str:
    with pytest.raises(SpecError) as info:
        parse_text(text, name, json_syntax=json_syntax)
    return str(info.value)


def test_scientific_notation_is_a_number() -> None:
    data = parse_text("lr: 1e-4\nbig: 1E5\nplain: 3\nword: e5\n").data
    assert data == {"lr": 1e-4, "big": 1e5, "plain": 3, "word": "e5"}


def test_plain_words_and_dates_are_text_as_yaml_1_2_reads_them() -> None:
    """YAML 1.1 made `on` a boolean (so a component named `on` became "True") and a date a timestamp, refused as a tag."""
    data = parse_text("description: 2024-05-01\non: 1\nflags: [yes, no, off, true, False]\n").data
    assert data == {"description": "2024-05-01", "on": 1, "flags": ["yes", "no", "off", True, False]}


def test_a_merge_key_merges_a_mapping_whose_keys_this_one_may_set() -> None:
    text = "base: &b {type: mlp, hidden: [8], output: none}\nnet: {<<: *b, hidden: [16]}\nboth: {<<: [{a: 1}, {a: 2, c: 3}]}\n"
    data = parse_text(text).data
    assert data["net"] == {"type": "mlp", "hidden": [16], "output": "none"} and data["both"] == {"a": 1, "c": 3}
    assert error_of("base: &b [1]\nnet: {<<: *b}\n") == "spec.yaml:1: net: `<<` merges a mapping (`<<: *name`) or a list of them into this one"


def test_lines_are_remembered_per_path() -> None:
    source = parse_text("a:\n  b: 1\n  c:\n    - x\n    - y\n", "f.yaml")
    assert source.locate(("a", "c", 1)) == ("f.yaml", 5)
    assert source.locate(("a", "b", "deeper")) == ("f.yaml", 2)


def test_malformed_yaml_names_the_line() -> None:
    message = error_of("name: x\ncomponents:\n  a: [1, 2\n  b: 3\n")
    assert message.startswith("spec.yaml:")
    assert "invalid YAML" in message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("name: x\ntrain:\n\tsteps: 1\n", "spec.yaml:3: invalid YAML, column 1: found character '\\t' that cannot start any token (while scanning for the next token): YAML indents with spaces, not tabs: replace the tab"),
        ("name: x\ntrain:\n  steps:5\n  batch_size: 8\n", "spec.yaml:4: invalid YAML, column 13: mapping values are not allowed here: a `key:value` without a space after the colon"),
        ("name: x\ntrain:\n    steps: 5\n  batch_size: 8\n", "spec.yaml:4: invalid YAML, column 3: expected <block end>, but found '<block mapping start>' (while parsing a block mapping): this line's indentation matches no key above it"),
        ("name: x\ntrain:\n  steps: 5\n   batch_size: 8\n", "spec.yaml:4: invalid YAML, column 14: mapping values are not allowed here: a `key:value` without a space after the colon, on this line or the one above, or a line indented deeper"),
    ],
)
def test_common_yaml_slips_are_said_with_their_usual_cause_and_column(text, said) -> None:
    """A tab, `steps:5` and a key indented one space too far gave PyYAML's words alone ("found character '\\t' that cannot start any token")."""
    assert error_of(text).startswith(said)


def test_duplicated_key_is_an_error() -> None:
    assert error_of("train:\n  steps: 1\n  steps: 2\n") == "spec.yaml:3: train.steps: duplicated key 'steps'"


@pytest.mark.parametrize("text", ["a: !!python/object:os.system x", "a: !!python/name:os.system", "a: !custom 1"])
def test_object_building_tags_are_refused(text: str) -> None:
    assert "is not allowed in a spec" in error_of(text)


@pytest.mark.parametrize(
    "text, where", [("name: x\ndescription: &a [*a]", "description[0]"), ("name: x\ndescription: &a {k: [1, *a]}", "description.k[1]")]
)
def test_a_recursive_alias_is_refused_where_it_is(text: str, where: str) -> None:
    """Not "maximum recursion depth exceeded", naming no file."""
    assert error_of(text) == f"spec.yaml:2: {where}: an alias inside the value it names (a recursive alias) has no finite value"


def test_a_value_named_twice_side_by_side_is_no_recursion() -> None:
    assert parse_text("a: &a [1]\nb: [*a, *a]").data == {"a": [1], "b": [[1], [1]]}


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    start = time.perf_counter()
    message = error_of("\n".join(lines))
    assert "alias bomb" in message
    assert time.perf_counter() - start < 2.0


def test_aliases_of_one_long_string_are_refused_quickly() -> None:
    """Few nodes, but each alias repeats 1 MB: the text they expand to is bounded, not only their number."""
    text = f"a: &a {'x' * 2**20}\nb: [" + ", ".join(["*a"] * 100) + "]"
    start = time.perf_counter()
    message = error_of(text)
    assert "alias bomb" in message and ": b[" in message
    assert time.perf_counter() - start < 2.0


def test_a_byte_order_mark_is_skipped_in_json_as_in_yaml() -> None:
    for json_syntax in (False, True):
        assert parse_text('\ufeff{"name": "x"}', json_syntax=json_syntax).data == {"name": "x"}


def test_json_trailing_comma_names_the_line() -> None:
    message = error_of('{\n  "name": "x",\n  "seed": 1,\n}\n', "spec.json", json_syntax=True)
    assert message.startswith("spec.json:4: ")
    assert "invalid JSON" in message


def test_json_duplicated_key_is_an_error() -> None:
    assert error_of('{"seed": 1, "seed": 2}', "s.json", json_syntax=True) == "s.json:1: seed: duplicated key 'seed'"


def test_json_duplicated_key_names_its_line_and_path() -> None:
    assert error_of('{\n  "name": "a",\n  "name": "b"\n}\n', "dup.json", json_syntax=True) == "dup.json:3: name: duplicated key 'name'"
    text = '{\n\t"train": {\n\t\t"steps": 1,\n\t\t"steps": 2\n\t}\n}\n'
    assert error_of(text, "dup.json", json_syntax=True) == "dup.json:4: train.steps: duplicated key 'steps'"


def test_json_indented_with_tabs_has_lines() -> None:
    source = parse_text('{\n\t"name": "x\\ty",\n\t"train": {\n\t\t"steps": 5\n\t}\n}\n', "s.json", json_syntax=True)
    assert source.data == {"name": "x\ty", "train": {"steps": 5}}
    assert source.locate(("train", "steps")) == ("s.json", 4)


def test_json_values_have_lines(tmp_path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n "name": "x",\n "train": {\n   "steps": 5\n }\n}\n')
    source = load_source(path)
    assert source.data["train"]["steps"] == 5
    assert source.locate(("train", "steps")) == (str(path), 4)


def test_unreadable_file_is_a_spec_error(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_source(tmp_path / "missing.yaml")


def test_a_spec_may_be_piped_in_but_an_endless_one_is_cut_off(tmp_path) -> None:
    """``compose-gen validate <(...)`` reads a pipe; a link to /dev/zero filled memory."""
    import os
    import threading

    os.mkfifo(tmp_path / "piped.yaml")
    writer = threading.Thread(target=lambda: (tmp_path / "piped.yaml").write_text("name: piped\n"))
    writer.start()
    assert load_source(tmp_path / "piped.yaml").data == {"name": "piped"}
    writer.join()
    (tmp_path / "zeros.yaml").symlink_to("/dev/zero")
    assert error_of_file(tmp_path / "zeros.yaml") == f"cannot read {tmp_path / 'zeros.yaml'}: more than 64 MiB, far beyond any spec or record"


def error_of_file(path) -> str:
    with pytest.raises(SpecError) as info:
        load_source(path)
    return str(info.value)


@pytest.mark.parametrize("json_syntax", [False, True], ids=["yaml", "json"])
def test_an_integer_of_more_digits_than_python_reads_is_a_located_error(json_syntax) -> None:
    digits = "9" * 5001
    text = f'{{"name": "t", "train": {{"steps": {digits}}}}}' if json_syntax else f"name: t\ntrain:\n  steps: {digits}\n"
    message = error_of(text, json_syntax=json_syntax)
    assert message == (
        "spec.yaml:1: a number in it: an integer of more than 4300 digits, more than any setting needs or Python reads"
        if json_syntax
        else "spec.yaml:3: train.steps: 999999999999...: an integer of more than 4300 digits, more than any setting needs or Python reads"
    )


def test_a_spec_is_read_from_stdin_as_dash(monkeypatch) -> None:
    """`cat spec.yaml | compose-gen validate -`: '-' read as a file name was 'No such file or directory'."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("name: piped\nseed: 3\n"))
    source = load_source("-")
    assert source.name == "<stdin>" and source.data == {"name": "piped", "seed": 3}
    monkeypatch.setattr("sys.stdin", io.StringIO("name: [\n"))
    with pytest.raises(SpecError, match="invalid YAML"):
        load_source("-")


def test_an_endless_stdin_is_read_to_a_bound(monkeypatch) -> None:
    """`yes | compose-gen validate -` read stdin to its end: memory without bound, then a MemoryError traceback."""

    class Endless:
        def read(self, size: int = -1) -> str:
            assert size >= 0, "read to the end of an endless stream"
            return "a: 1\n" * (size // 5 + 1)

    monkeypatch.setattr("sys.stdin", Endless())
    with pytest.raises(SpecError, match="cannot read <stdin>: more than 64 MiB"):
        load_source("-")
