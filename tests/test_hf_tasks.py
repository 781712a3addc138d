"""Hugging Face teachers and students in pcfg-bert and wikipedia-bert, through the CLI.

The pretrained teacher is a tiny BERT made by :func:`kdbench.testing.tiny_bert.make_tiny_bert` from the
shipped WikiText-2 excerpt: a WordPiece tokenizer numbered like bert-base-uncased ([PAD] 0,
[UNK] [CLS] [SEP] [MASK] 100-103) and random weights (``steps=0``: these tests check the
mechanics, not what distillation achieves). It is saved with ``save_pretrained`` and loaded
back from disk as a user's folder would be; nothing is downloaded.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdbench.models import HFEncoder, load_exported
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task
from kdbench.suite.identity import Run
from kdbench.run.pricing import load_suite

from conftest import DATA, ROOT, SUITES, kdbench

transformers = pytest.importorskip("transformers")
CPU = torch.device("cpu")
STUDENT = {"type": "bert", "config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                      "intermediate_size": 32}}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from kdbench.testing.tiny_bert import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert", width=32, layers=4, heads=2)


def distil_bert_suite(folder: Path, out: Path) -> Path:
    """suites/hf/distil-bert.yaml as shipped, shrunk to seconds: a few steps, a small evaluation."""
    suite = yaml.safe_load((SUITES / "hf" / "distil-bert.yaml").read_text())
    task = suite["tasks"][0]
    assert task["params"]["teacher_hf"] == "${MY_BERT}"
    task["params"].update(corpus=str(DATA / "wikitext-2-excerpt"), eval_size=16)
    task["student"]["batch_size"] = 8
    suite.update(budget={"steps": 6, "method": "one-shot"}, eval={"points": 2})
    path = folder / "distil-bert.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run_task(out: Path, run_folder: Path):
    run = Run.from_config(json.loads((run_folder / "config.json").read_text()))
    return build_task(run, load_plugins(), CPU, out)


def test_distil_your_own_bert_suite(tiny_bert, tmp_path, monkeypatch):
    """The shipped suite distils the pretrained-from-disk BERT into a 2-layer HF student with one-shot
    and curriculum extraction: the teacher is loaded, not trained; the students are kept and export
    as save_pretrained folders that score what the runs recorded."""
    monkeypatch.setenv("MY_BERT", str(tiny_bert))
    out = tmp_path / "out"
    suite = distil_bert_suite(tmp_path, out)
    result = kdbench("run", suite, "-o", out, "-q")
    assert "2 runs executed" in result.output
    (teacher,) = (out / "teachers").iterdir()
    summary = json.loads((teacher / "summary.json").read_text())
    assert summary["given"] == "pretrained teacher" and summary["source"] == str(tiny_bert)
    assert summary["steps"] == 0 and summary["flops"] == 0 and not (teacher / "curve.json").exists()
    assert f"loaded from {tiny_bert}" in (out / "leaderboard.md").read_text()

    reference = transformers.AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    text = "The game was released in Japan."
    for run in sorted((out / "runs").iterdir()):
        recorded = json.loads((run / "summary.json").read_text())
        assert recorded["status"] == "finished"
        assert json.loads((run / "student.json").read_text())["model"]["class"] == "kdbench.models.HFEncoder"
        kdbench("export", run, tmp_path / run.name)
        model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / run.name, local_files_only=True)
        assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(reference)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / run.name, local_files_only=True)
        assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
        assert tokenizer.mask_token_id == reference.mask_token_id == 103
        metrics = run_task(out, run).evaluate(load_exported(tmp_path / run.name))
        assert metrics["masked_accuracy"] == recorded["metrics"]["masked_accuracy"]


def test_the_docs_show_the_shipped_suite():
    section = (ROOT / "docs" / "hf.md").read_text().split("## Distil your own BERT", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load((SUITES / "hf" / "distil-bert.yaml").read_text())


def test_the_teacher_id_hashes_the_folders_contents(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_BERT", str(tiny_bert))
    suite = distil_bert_suite(tmp_path, tmp_path / "out")

    def teacher_ids():
        loaded, _ = load_suite(suite, load_plugins)
        return {r.teacher_id for r in loaded.runs}, {r.run_id for r in loaded.runs}

    before = teacher_ids()
    notes = tiny_bert / "README.md"
    notes.write_text("a model card")
    try:
        changed = teacher_ids()
    finally:
        notes.unlink()
    assert len(before[0]) == 1 and changed[0].isdisjoint(before[0]) and changed[1].isdisjoint(before[1])
    assert teacher_ids() == before


def test_wikipedia_bert_takes_the_pretrained_teachers_tokenizer(tiny_bert):
    from kdbench.tasks.wikipedia import WikipediaBert, WikipediaParams

    reference = transformers.AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    params = WikipediaParams(corpus=str(DATA / "wikitext-2-excerpt"), teacher_hf=str(tiny_bert), seq_len=32,
                             eval_size=32)
    task = WikipediaBert().build(params, 0, CPU)
    assert task.vocab_size == len(reference) == 1000
    specials = torch.tensor(reference.all_special_ids)
    assert sorted(reference.all_special_ids) == [0, 100, 101, 102, 103]
    batch = task.train_batch(torch.Generator().manual_seed(0), 64)
    masked_input = batch.inputs[batch.mask]
    assert torch.all(batch.inputs[:, 0] == reference.cls_token_id)
    assert torch.all(batch.inputs[:, -1] == reference.sep_token_id)
    assert not torch.isin(batch.labels, specials).any()  # specials are never chosen
    replaced = masked_input != batch.labels
    assert (masked_input == reference.mask_token_id).float().mean() > 0.6  # 80% [MASK]
    random = masked_input[replaced & (masked_input != reference.mask_token_id)]
    assert len(random) > 0 and not torch.isin(random, specials).any()  # random tokens are ordinary ones
    # the corpus is tokenized as the teacher's tokenizer does it
    line = "The game 's battle system , the BliTZ system , is carried over directly from Valkyira Chronicles ."
    ids = reference(line, add_special_tokens=False)["input_ids"]
    assert task.tokenizer.encode(line, add_special_tokens=False).ids == ids
    teacher = task.teacher_model()
    assert isinstance(teacher, HFEncoder) and task.teacher_source() == str(tiny_bert)


PCFG = """
name: hf-pcfg
seeds: [0]
budget: {{steps: 4, method: one-shot}}
eval: {{points: 2}}
tasks:
  - name: pcfg-bert
    params: {{seq_len: 24, eval_size: 8, teacher_hf: {teacher}, student_hf: {student}}}
    teacher: {{batch_size: 4, steps: 3}}
    student: {{batch_size: 4}}
methods:
{methods}
"""


def pcfg_suite(write_suite, teacher, student=json.dumps(STUDENT), methods="  - name: one-shot"):
    return write_suite(PCFG.format(teacher=teacher, student=student, methods=methods))


def test_pcfg_bert_trains_an_hf_teacher_from_a_config_and_takes_a_pretrained_one_as_given(write_suite, tmp_path):
    vocab = 3 + 3  # cfg3b's terminals, pad, [CLS], [MASK]
    out = tmp_path / "out"
    config = {"type": "roberta", "config": {**STUDENT["config"], "num_hidden_layers": 3}}
    kdbench("run", pcfg_suite(write_suite, json.dumps(config)), "-o", out, "-q")
    (trained,) = (out / "teachers").iterdir()
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 3 and "given" not in summary
    spec = json.loads((trained / "teacher.json").read_text())["model"]["hf_config"]
    assert spec["model_type"] == "roberta" and spec["vocab_size"] == vocab and spec["num_hidden_layers"] == 3
    folder = tmp_path / "pcfg-teacher"
    torch.manual_seed(0)
    HFEncoder.from_config("bert", {**STUDENT["config"], "vocab_size": vocab}).save_pretrained(folder)
    kdbench("run", pcfg_suite(write_suite, folder), "-o", out, "-q")
    given = next(d for d in (out / "teachers").iterdir() if d != trained)
    assert json.loads((given / "summary.json").read_text())["source"] == str(folder)


def test_pcfg_bert_refuses_a_pretrained_teacher_of_another_vocabulary(write_suite, tiny_bert, tmp_path):
    result = kdbench("run", pcfg_suite(write_suite, tiny_bert), "-o", tmp_path / "out", expect=2)
    assert "teacher_hf" in result.output and "vocabulary of 1000 tokens" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("teacher", ["pretrained", "checkpoint"])
def test_progressive_with_a_given_teacher_is_refused_before_training(write_suite, tmp_path, teacher):
    methods = "  - name: one-shot\n  - name: progressive\n    params: {checkpoints: [1, 2]}"
    if teacher == "pretrained":
        folder = tmp_path / "pcfg-teacher"
        HFEncoder.from_config("bert", {**STUDENT["config"], "vocab_size": 6}).save_pretrained(folder)
        path = pcfg_suite(write_suite, folder, methods=methods)
    else:
        from kdbench.tasks.pcfg import PCFGBert

        task = PCFGBert().build(PCFGBert.Params(seq_len=24, eval_size=8), 0, CPU)
        torch.save(task.teacher_model().state_dict(), tmp_path / "t.pt")
        text = PCFG.format(teacher="null", student="null", methods=methods)
        path = write_suite(text.replace("    teacher: {", "    teacher_checkpoint: t.pt\n    teacher: {"))
    result = kdbench("run", path, "-o", tmp_path / "out", expect=2)
    assert "methods[1] (progressive)" in result.output and "the teacher is given" in result.output
    assert not (tmp_path / "out").exists()


def test_hf_params_errors_are_exit_2_naming_the_field(write_suite, tmp_path, monkeypatch):
    bad = {"type": "bert", "config": {"hiden_size": 16}}
    result = kdbench("validate", pcfg_suite(write_suite, "null", json.dumps(bad)), expect=2)
    assert "config.hiden_size is not a BertConfig field" in result.output
    wrong_vocab = {"type": "bert", "config": {**STUDENT["config"], "vocab_size": 7}}
    result = kdbench("validate", pcfg_suite(write_suite, "null", json.dumps(wrong_vocab)), expect=2)
    assert "student_hf.config.vocab_size: 7" in result.output
    result = kdbench("validate", pcfg_suite(write_suite, "{type: gpt2}"), expect=2)
    assert "teacher_hf" in result.output and "gpt2" in result.output
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    result = kdbench("validate", pcfg_suite(write_suite, "null"), expect=2)
    assert 'pip install "kdbench[hf]"' in result.output


def test_unset_hf_params_leave_run_params_as_they_were(write_suite):
    loaded, _ = load_suite(pcfg_suite(write_suite, "null", "null"), load_plugins)
    assert not {"teacher_hf", "student_hf"} & set(loaded.runs[0].config()["task_params"])
