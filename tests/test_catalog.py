"""``kdbench list`` and ``kdbench describe``: whole names in any output, every param documented."""

import io
import json
import textwrap

import pytest
from rich.console import Console

from kdbench.cli.catalog import print_listing
from kdbench.plugins import load_plugins

from conftest import kdbench

TWIN = textwrap.dedent('''
    from pydantic import Field
    from kdbench import Method, Params, Task, hookimpl
    from kdbench.tasks.parity import ParityMLP

    class TwinParams(Params):
        weight: float = Field(0.5, ge=0, le=2, description="how much")

    class TwinMethod(Method):
        name, version, Params, description = "twin", "3", TwinParams, "a method called twin"

    class TwinTask(ParityMLP):
        name, version, description = "twin", "4", "a task called twin"

    @hookimpl
    def kdbench_register_methods():
        return [TwinMethod]

    @hookimpl
    def kdbench_register_tasks():
        return [TwinTask]
''')


def test_list_piped_prints_whole_names_one_plugin_a_line():
    out = kdbench("list").output  # CliRunner's output is not a terminal
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    registry = load_plugins()
    expected = {(kind, name, info.version, info.source.split()[0]) for kind in ("task", "method", "launcher")
                for name, info in getattr(registry, kind + "s").items()}
    assert expected <= rows and ("task", "parity-transformer", "1", "built-in") in rows
    assert "…" not in out


def test_list_on_a_narrow_terminal_keeps_names_and_versions_whole():
    console = Console(file=io.StringIO(), force_terminal=True, width=40, color_system=None)
    print_listing(console, console, load_plugins())
    text = console.file.getvalue()
    assert "parity-transformer" in text and "curriculum-extraction" in text and "…" not in text


def test_list_json_has_every_plugin_and_the_failures(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('missing dependency xyz')\n")
    data = json.loads(kdbench("list", "--format", "json", "--plugin", bad).stdout)
    rows = {(r["kind"], r["name"]): r for r in data["plugins"]}
    assert rows[("task", "parity-transformer")]["source"] == "built-in"
    assert rows[("method", "one-shot")]["version"] == "1" and rows[("method", "one-shot")]["description"]
    assert data["failures"] == [{"plugin": str(bad), "source": f"file {bad}",
                                 "error": "ImportError: missing dependency xyz"}]


def test_describe_prints_each_param_with_type_allowed_values_default_and_description():
    out = kdbench("describe", "progressive").output
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "method progressive 1 (built-in)" in out and "methods[i].params" in out
    assert lines["switch"].split()[1:5] == ["str", '"proportional",', '"fixed",', '"saturate"']
    assert lines["multiplier"].split()[1:5] == ["float", ">", "0", "1.0"]
    assert "teacher steps per student step" in lines["multiplier"]


@pytest.mark.parametrize("kind", ["task", "method", "launcher"])
def test_describe_json_agrees_with_the_json_schema(kind):
    """Bounds, choices and defaults as pydantic's own JSON schema states them (an independent reading)."""
    registry = load_plugins()
    for name, info in getattr(registry, kind + "s").items():
        (described,) = json.loads(kdbench("describe", name, "--kind", kind, "--format", "json").stdout)
        schema = info.cls.Params.model_json_schema()["properties"]
        assert [p["name"] for p in described["params"]] == list(schema)
        for p in described["params"]:
            field = schema[p["name"]]
            assert p["default"] == field.get("default"), (name, p["name"])
            for word, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                                 ("exclusiveMaximum", "<")):
                if word in field:
                    assert p["bounds"][symbol] == field[word], (name, p["name"])
            if "enum" in field:
                assert p["choices"] == field["enum"], (name, p["name"])


def test_a_name_shared_by_a_task_and_a_method(tmp_path):
    path = tmp_path / "twin.py"
    path.write_text(TWIN)
    out = kdbench("describe", "twin", "--plugin", path).output
    assert "task twin 4" in out and "method twin 3" in out
    out = kdbench("describe", "twin", "--kind", "method", "--plugin", path).output
    assert "method twin 3" in out and "task twin" not in out
    assert "weight  float  >= 0; <= 2  0.5      how much" in out


def test_describe_unknown_name_is_a_user_error():
    out = kdbench("describe", "one-sht", expect=2).output
    assert "unknown plugin 'one-sht' (did you mean 'one-shot'?)" in out
    assert "unknown method 'parity-mlp'" in kdbench("describe", "parity-mlp", "--kind", "method", expect=2).output
    assert "'tool' is not a plugin kind" in kdbench("describe", "one-shot", "--kind", "tool", expect=2).output


def test_every_builtin_param_has_a_description():
    registry = load_plugins()
    missing = [f"{kind} {name}: params.{field}" for kind in ("tasks", "methods", "launchers")
               for name, info in getattr(registry, kind).items() if info.source == "built-in"
               for field, spec in info.cls.Params.model_fields.items() if not (spec.description or "").strip()]
    assert not missing, "give these params a Field(description=...): " + ", ".join(missing)
