"""Plugins from files and entry points; broken plugins are reported by name, the rest still load."""

import textwrap

from kdbench.plugins import load_plugins

from conftest import kdbench, tiny_suite

PLUGIN = textwrap.dedent('''
    import torch.nn.functional as F
    from kdbench import Method, Params, Phase, hookimpl, logits

    class HalfParams(Params):
        weight: float = 0.5

    class Half(Method):
        """Labels loss scaled by a weight: a minimal third-party method."""
        name = "half-labels"
        version = "7"
        Params = HalfParams
        needs_teacher = False

        def phases(self, ctx, params):
            s = ctx.student
            return [Phase("half", loss=lambda b: params.weight * F.cross_entropy(logits(s, b), b.labels))]

    @hookimpl
    def kdbench_register_methods():
        return [Half]
''')


def test_plugin_from_file_is_listed(tmp_path):
    path = tmp_path / "half.py"
    path.write_text(PLUGIN)
    out = kdbench("list", "--plugin", path).output
    assert "half-labels" in out and "7" in out and "file" in out


def test_suite_plugins_list_runs_the_method(tmp_path, write_suite):
    (tmp_path / "half.py").write_text(PLUGIN)
    text = tiny_suite(methods="  - name: half-labels\n    params: {weight: 0.25}") + "plugins: [half.py]\n"
    out = tmp_path / "out"
    kdbench("run", write_suite(text), "--output", out, "--quiet")
    board = (out / "leaderboard.md").read_text()
    assert "| half-labels | 7 " in board


def test_broken_plugin_is_reported_and_others_load(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('missing dependency xyz')\n")
    registry = load_plugins((str(bad),))
    assert "missing dependency xyz" in registry.failures[str(bad)]
    assert "one-shot" in registry.methods and "parity-mlp" in registry.tasks
    result = kdbench("list", "--plugin", bad)
    assert "failed to load" in result.output and "one-shot" in result.output


def test_strict_plugins_make_failure_fatal(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.setenv("KDBENCH_STRICT_PLUGINS", "1")
    result = kdbench("list", "--plugin", bad, expect=2)
    assert "bad.py" in result.output and "missing dependency xyz" in result.output


def test_suite_naming_a_broken_plugin_file_is_user_error(tmp_path, write_suite):
    (tmp_path / "bad.py").write_text("import no_such_module_here\n")
    result = kdbench("validate", write_suite(tiny_suite() + "plugins: [bad.py]\n"), expect=2)
    assert "bad.py" in result.output and "no_such_module_here" in result.output


TYPO_HOOK = PLUGIN.replace("def kdbench_register_methods():", "def kdbench_register_method():") + textwrap.dedent('''
    def kdbench_helper():  # named like a hook but not marked with hookimpl: an ordinary function
        return 1
''')


def test_hookimpl_with_a_name_that_is_no_hook_fails_the_plugin(tmp_path, monkeypatch):
    path = tmp_path / "typo.py"
    path.write_text(TYPO_HOOK)
    registry = load_plugins((str(path),))
    error = registry.failures[str(path)]
    assert "kdbench_register_method is not a kdbench hook (did you mean kdbench_register_methods?)" in error
    assert "kdbench_helper" not in error  # not marked: not a hook
    assert "half-labels" not in registry.methods and "one-shot" in registry.methods
    out = kdbench("list", "--plugin", path).output
    assert f"plugin {path} failed to load" in out and "kdbench_register_method is not a kdbench hook" in out
    monkeypatch.setenv("KDBENCH_STRICT_PLUGINS", "1")
    out = kdbench("list", "--plugin", path, expect=2).output
    assert "typo.py" in out and "did you mean kdbench_register_methods?" in out


def test_unmarked_function_named_like_a_hook_is_not_a_hook(tmp_path, monkeypatch):
    path = tmp_path / "helper.py"
    path.write_text(PLUGIN + "\ndef kdbench_helper():\n    return 1\n")
    monkeypatch.setenv("KDBENCH_STRICT_PLUGINS", "1")
    assert "half-labels" in load_plugins((str(path),)).methods

