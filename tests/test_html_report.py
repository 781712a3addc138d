"""The self-contained HTML report (kdbench.results.html): written by `kdbench run`, `kdbench report` and
`kdbench html`; holds the leaderboard's own cells, every run's data and no script from the network; and,
opened in a real headless Chromium (Selenium), its tables sort and every method's curve is drawn."""

import json
import os
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import kdbench

from kdbench import load_results
from kdbench.commands import write_outputs
from kdbench.results.leaderboard import build_leaderboard
from kdbench.results.render import table

CLAIM = "one-shot beats labels <b>&</b>"  # the one free text of a suite: must come out escaped
# Two tasks (one with a target), three methods, two seeds, a claim and a tuned method: every section.
SUITE = f"""
name: html-demo
seeds: [0, 1]
budget: {{flops: 2.0e+6}}
eval: {{points: 4, target: 0.6}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 50, checkpoint_every: 10}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
  - name: parity-mlp
    label: parity-wide
    params: {{n: 12, k: 2, teacher_width: 64, student_width: 24, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 50, checkpoint_every: 10}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
methods:
  - name: labels
  - name: one-shot
  - name: progressive
claims:
  - {{name: "{CLAIM}", better: one-shot, than: labels, metric: auc}}
tune:
  trials: 2
  dev_seeds: [100]
  objective: auc
  sampler: random
  space:
    one-shot: {{temperature: {{low: 0.5, high: 4}}}}
"""
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo suite run once through the CLI: its results folder (read-only for the tests)."""
    root = tmp_path_factory.mktemp("html")
    (root / "suite.yaml").write_text(SUITE)
    kdbench("run", root / "suite.yaml", "--output", root / "out", "--quiet")
    return root / "out"


class Tables(HTMLParser):
    """Every ``<table>`` of a page: its headers and its body rows, each cell as (text, attributes)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = (tag, dict(attrs), [])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2].append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            kind, attrs, text = self._cell
            if kind == "th":
                self.tables[-1]["headers"].append("".join(text))
            else:
                self.tables[-1]["rows"][-1].append(("".join(text), attrs))
            self._cell = None
        elif tag == "tr" and self.tables and not self.tables[-1]["rows"][-1]:
            self.tables[-1]["rows"].pop()  # the header row


def page_data(text: str) -> dict:
    """The report's data: the JSON element the page's script reads."""
    return json.loads(re.search(r'<script type="application/json" id="kd-data">(.*?)</script>', text, re.S).group(1))


def test_run_writes_a_self_contained_report_with_every_run(demo):
    text = (demo / "report.html").read_text()
    res = load_results(demo)
    runs, data = res.runs(), page_data(text)
    assert sorted(r["run_id"] for r in data["runs"]) == sorted(runs.run_id)
    assert [t["task"] for t in data["tasks"]] == ["parity-mlp", "parity-wide"]
    for task in data["tasks"]:
        g = runs[(runs.task == task["task"]) & (runs.status == "finished")]
        assert [m["method"] for m in task["methods"]] == ["labels", "one-shot", "progressive"]
        assert set(task["y"]) == {"accuracy", "agreement", "teacher_kl"}
        for m in task["methods"]:
            assert m["n"] == len(g[g.method == m["method"]]) == 2
            for x in ("flops", "steps"):
                for y in task["y"]:
                    s = m["series"][x][y]
                    assert len(s["x"]) == len(s["mean"]) >= 4 and s["x"] == sorted(s["x"])
                    assert all(lo <= mean + 1e-12 and mean <= hi + 1e-12
                               for lo, mean, hi in zip(s["lo"], s["mean"], s["hi"]))
    # scripts: the data, plotly's bundle and ours, all inline; no address to load anything from
    scripts = re.findall(r"<script\b[^>]*>", text)
    assert len(scripts) == 3 and not any("src" in s for s in scripts)
    from plotly.offline import get_plotlyjs  # only to cut the bundle out: its own strings name web addresses

    ours = text.replace(get_plotlyjs(), "")
    assert len(text) - len(ours) > 3_000_000 and not re.search(r"https?://|<link\b|@import", ours)


def test_the_tables_are_the_leaderboards_cells_escaped(demo):
    text = (demo / "report.html").read_text()
    parser = Tables()
    parser.feed(text)
    board = build_leaderboard(load_results(demo))
    leaderboards = [t for t in parser.tables if t["headers"][:2] == ["Method", "Version"]]
    assert len(leaderboards) == len(board.boards) == 2
    for shown, b in zip(leaderboards, board.boards):
        cells, best = table(b)
        assert shown["headers"] == list(cells.columns)
        assert [[c for c, _ in row] for row in shown["rows"]] == cells.values.tolist()  # a row per method
        metric = shown["headers"].index(f"{b.metric} ↑")
        assert [float(row[metric][1]["data-v"]) for row in shown["rows"]] == list(b.methods["mean"])
        assert [["kd-best" in a.get("class", "") for _, a in row] for row in shown["rows"]] == best.values.tolist()
    assert "Tuning protocol: every tuned method had the same budget of 2 trials" in text
    assert 'id="tuning"' in text and 'id="provenance"' in text and "<h3>Claims</h3>" in text
    assert "one-shot beats labels &lt;b&gt;&amp;&lt;/b&gt;" in text and CLAIM not in text


def test_report_and_html_commands_write_it(demo, tmp_path):
    kdbench("report", demo, tmp_path / "paper")
    assert page_data((tmp_path / "paper" / "report.html").read_text())["title"] == "html-demo"
    assert "`report.html`" in (tmp_path / "paper" / "README.md").read_text()
    out = kdbench("html", demo, "-o", tmp_path / "one.html", "--baseline", "labels").output
    assert "wrote" in out and "Δ vs labels" in (tmp_path / "one.html").read_text()
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert "no runs to show" in kdbench("html", tmp_path / "empty", expect=2).output
    assert not (tmp_path / "empty" / "report.html").exists()


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system's packages, driven by Selenium; skipped without them."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[test])")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.skip(f"{path} not found: the browser test needs Debian's chromium and chromium-driver "
                        "(apt-get install chromium chromium-driver; .ci/run installs them)")
    from selenium.webdriver.chrome.service import Service  # with selenium only: the test skips without it

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        # no network at all: these stop Chromium's own calls home (updates, sync, field trials)
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1800",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the path: no driver download
        try:
            yield driver
        finally:
            driver.quit()


def open_report(driver, path: Path, plots: int):
    """Load ``path`` and wait until its ``plots`` figures are drawn."""
    from selenium.webdriver.support.ui import WebDriverWait  # with selenium only: the test skips without it

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.querySelectorAll('.js-plotly-plot .main-svg').length >= arguments[0]", plots))


def column(driver, index: int, numbers: bool = False) -> list:
    """The first table's column ``index`` in its shown order: the cells' text, or their ``data-v`` numbers."""
    cells = driver.execute_script(
        "return Array.from(document.querySelector('table.kd-sortable').tBodies[0].rows)"
        ".map(r => [r.cells[arguments[0]].textContent, r.cells[arguments[0]].getAttribute('data-v')])", index)
    return [float(v) for _, v in cells] if numbers else [t for t, _ in cells]


def test_the_tables_sort_in_the_browser(browser, demo):  # browser first: a skip runs no suite
    open_report(browser, demo / "report.html", 2)
    headers = browser.find_elements("css selector", "table.kd-sortable")[0].find_elements("css selector", "th")
    names = [h.text.rstrip(" ↕▲▼") for h in headers]
    auc = names.index("AUC")
    headers[auc].click()
    up = column(browser, auc, numbers=True)
    assert up == sorted(up) and len(set(up)) == 3
    assert headers[auc].get_attribute("aria-sort") == "ascending"
    methods_up = column(browser, 0)
    headers[auc].click()
    assert column(browser, auc, numbers=True) == up[::-1] and column(browser, 0) == methods_up[::-1]
    headers[0].click()
    assert column(browser, 0) == ["labels", "one-shot", "progressive"]
    headers[0].click()
    assert column(browser, 0) == ["progressive", "one-shot", "labels"]


def test_every_curve_is_drawn_and_the_axes_switch(browser, demo):
    open_report(browser, demo / "report.html", 2)
    if os.environ.get("KDBENCH_SCREENSHOT"):  # the whole page, for a reader to look at
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(height + 200, 8000))
        browser.save_screenshot(os.environ["KDBENCH_SCREENSHOT"])
    data = page_data((demo / "report.html").read_text())
    drawn = browser.execute_script("""
        return Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => gd.data
            .filter(t => t.meta === 'mean')
            .map(t => {const g = gd.querySelector('g.trace' + t.uid), path = g && g.querySelector('path.js-line');
                       return [t.name, t.x.length, path ? path.getAttribute('d') : null,
                               g ? g.querySelectorAll('path.point').length : 0];}));""")
    assert len(drawn) == len(data["tasks"]) == 2
    for task, traces in zip(data["tasks"], drawn):
        assert [name for name, *_ in traces] == [m["label"] for m in task["methods"]]
        for (name, points, d, markers), m in zip(traces, task["methods"]):
            assert points == markers == len(m["series"]["flops"]["accuracy"]["x"]) >= 4, name
            assert re.fullmatch(r"M[\d.,]+(L[\d.,]+)+", d), (name, d)  # a line (plotly drops collinear points)
    bands = browser.execute_script("return document.querySelectorAll('.js-plotly-plot g.trace path.js-fill').length")
    assert bands == 2 * 3  # two seeds each: a min-max band per method
    title = "return arguments[0].querySelector('.g-xtitle text').textContent"
    plot = browser.find_elements("css selector", ".kd-plot")[0]
    assert browser.execute_script(title, plot) == "training FLOPs (measured)"
    plot.find_element("css selector", 'button[data-value="steps"]').click()
    assert browser.execute_script(title, plot) == "student steps"
    steps = browser.execute_script("return arguments[0].querySelector('.js-plotly-plot').data"
                                   ".filter(t => t.meta === 'mean').map(t => t.x)", plot)
    assert steps == [m["series"]["steps"]["accuracy"]["x"] for m in data["tasks"][0]["methods"]]
    plot.find_element("css selector", 'button[data-value="agreement"]').click()
    ytitle = browser.execute_script("return arguments[0].querySelector('.g-ytitle text').textContent", plot)
    assert ytitle.startswith("Agreement")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_an_html_problem_is_reported_never_fatal(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(demo, out)
    (out / "report.html").unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("kdbench.results.plots.write_figures", lambda *args, **kwargs: [])  # not under test: slow
    monkeypatch.setattr("kdbench.results.html.write_html_report", broken)
    messages = []
    path, _ = write_outputs(out, messages.append)
    assert path == out / "leaderboard.md" and messages == ["report.html not written: RuntimeError: boom"]
    monkeypatch.undo()
    monkeypatch.setattr("kdbench.results.plots.write_figures", lambda *args, **kwargs: [])
    write_outputs(out, messages.append)  # not stamped up to date: the next run writes it
    assert page_data((out / "report.html").read_text())["title"] == "html-demo" and len(messages) == 1
