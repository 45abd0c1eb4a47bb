"""The run report (sslhub/report): a toy run's page, runs side by side, a run without evaluation, the CLI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from toy_runs import sslhub, sslhub_env, toy_run_command

from sslhub.report import plots, write_report
from sslhub.report.rundir import PNG_SIGNATURE, load_run

SHORT = ["--set", "train.steps=20", "--set", "evaluate.few_shot.shots=[1,5]", "--set", "evaluate.embedding_sample=100"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A finished toy run (evaluation on, report written at its end)."""
    out = tmp_path_factory.mktemp("report") / "run"
    done = subprocess.run(
        toy_run_command(out, *SHORT, report=True), capture_output=True, text=True, env=sslhub_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    return out


def inline_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?://", page), "the report must not refer to the network"
    sources = re.findall(r"(?:src|href)=['\"]([^'\"]*)", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources
    assert "<script" not in page


@pytest.mark.slow
def test_a_run_writes_a_self_contained_report(toy_run):
    page = (toy_run / "report.html").read_text()
    assert_self_contained(page)
    images = inline_images(page)
    # training curves, few-shot plot, embedding map, the toy modality's augmentation sample picture
    assert len(images) == 4 and all(i.startswith(PNG_SIGNATURE) for i in images)
    evaluation = json.loads((toy_run / "evaluation.json").read_text())
    for line in evaluation["verdict"]:
        assert line in page
    assert "few_shot_5_accuracy" in page and "Few-shot accuracy against labels per class" in page
    assert "toy-512-16" in page  # the data fingerprint, from environment.json
    assert (toy_run / "augmentation_samples" / "vectors.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "first_values.txt" in page


def test_the_evaluation_saves_a_capped_embedding_sample(toy_run):
    with np.load(toy_run / "embeddings_sample.npz", allow_pickle=False) as sample:
        assert set(sample.files) == {"labels", "class_names", "trained", "random_init", "raw_input"}
        assert sample["labels"].shape == (100,)  # evaluate.embedding_sample caps the 256 probe-test rows
        assert sample["trained"].shape == (100, 16) and sample["raw_input"].shape == (100, 16)


def legend_colours(figure) -> dict[str, tuple[float, ...]]:
    """The class legend's ``{class name: RGBA}``."""
    (legend,) = figure.legends
    return {
        text.get_text(): tuple(handle.get_color())
        for text, handle in zip(legend.texts, legend.legend_handles, strict=True)
    }


def test_the_embedding_map_colours_points_by_their_label(toy_run, monkeypatch):
    sample = load_run(toy_run).embeddings[""]
    names = sample.class_names or [str(i) for i in range(int(sample.labels.max()) + 1)]
    monkeypatch.setattr(plots, "TSNE_MAX_POINTS", 60)  # the t-SNE row draws a subsample: its colours must follow it
    figure = plots.embedding_figure(sample, tsne=True)
    legend = legend_colours(figure)
    assert set(legend) == set(names) and len(set(legend.values())) == len(names) > 1
    tsne_rows = plots._tsne_rows(len(sample.labels))
    assert len(tsne_rows) == 60
    panels = [axis for axis in figure.axes if axis.collections]
    assert len(panels) == 2 * len(sample.features)  # PCA and t-SNE for trained, random init, raw input
    for axis in panels:
        scatter = axis.collections[0]
        rows = tsne_rows if "t-SNE" in axis.get_title() else np.arange(len(sample.labels))
        if "PCA" in axis.get_title():  # the points are the samples in order: their positions say so
            candidate = next(k for k in sample.features if plots.CANDIDATE_NAMES[k] in axis.get_title())
            assert np.allclose(scatter.get_offsets(), plots.pca_2d(sample.features[candidate]), atol=1e-5)
        colours = scatter.get_facecolors()
        assert len(colours) == len(rows)
        for colour, label in zip(colours, sample.labels[rows], strict=True):
            assert np.allclose(colour, legend[names[label]]), (axis.get_title(), names[label])


def test_two_runs_side_by_side_list_the_recipe_difference(toy_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(toy_run, other, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = yaml.safe_load((other / "recipe.yaml").read_text())
    recipe["train"]["optimizer"]["lr"] = 0.5
    (other / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "both.html"
    done = sslhub("report", str(toy_run), str(other), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    page = out.read_text()
    assert_self_contained(page)
    row = re.search(r"<tr><td>train\.optimizer\.lr</td>(.*?)</tr>", page)
    assert row and "0.01" in row.group(1) and "0.5" in row.group(1)
    assert "<td>train.steps</td>" not in page  # only what differs is listed
    assert page.count("Verdict") == 2


def test_the_verdict_heading_counts_losses_and_wins_within_the_spread_of_the_draws():
    from sslhub.report.page import verdict_summary

    win = "trained beats random init on kNN: 0.8000 vs 0.4000"
    narrow = "trained beats raw input on 5-shot probe: 0.5000 vs 0.4800 (within the spread of the draws, std 0.0500)"
    loss = "trained does NOT beat raw input on kNN: 0.4000 vs 0.5000"
    assert verdict_summary([win]) == "the trained encoder beats every baseline on all 1 comparisons"
    assert verdict_summary([win, narrow]) == (
        "the trained encoder beats every baseline on all 2 comparisons, 1 of them by less than the spread of the few-shot draws"
    )
    assert verdict_summary([win, narrow, loss]) == "the trained encoder loses 1 of 3 comparisons with a baseline"


def test_a_run_without_evaluation_still_reports_and_its_marks(toy_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(toy_run, bare, ignore=shutil.ignore_patterns("checkpoints", "evaluation*.json", "*.npz"))
    (bare / "events.jsonl").write_text(
        '{"event": "skipped_step", "step": 12}\n{"event": "skipped_step", "step": 4}\n'
        '{"event": "resumed", "step": 10}\n'
    )
    page = write_report([bare], bare / "again.html").read_text()
    assert_self_contained(page)
    assert "No evaluation.json" in page and "No embeddings_sample.npz" in page
    # the skip at 12 lies after the checkpoint the run resumed from: that step was redone
    assert "resumed at step 10; skipped steps 4" in page


def test_report_enabled_false_writes_none_and_engine_records_skipped_steps(tmp_path):
    out = tmp_path / "run"
    extra = ["--set", "train.steps=6", "--set", "evaluate.enabled=false", "--set", "report.enabled=false"]
    extra += ["--set", "train.nonfinite=skip_step", "--set", "objectives.0.nan_at_step=3"]
    done = subprocess.run(toy_run_command(out, *extra), capture_output=True, text=True, env=sslhub_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (out / "report.html").exists()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [("skipped_step", 3)]
    done = sslhub("report", str(out))
    assert done.returncode == 0, done.stderr
    assert "skipped steps 3" in (out / "report.html").read_text()


def test_report_of_a_folder_that_is_no_run_is_a_clear_error(tmp_path):
    done = sslhub("report", str(tmp_path))
    assert done.returncode == 1
    assert f"error: {tmp_path} is not a run directory" in done.stderr and "Traceback" not in done.stderr


def test_a_link_out_of_the_run_directory_is_not_read(toy_run, tmp_path):
    run = tmp_path / "linked"
    shutil.copytree(toy_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG_SIGNATURE + b"outside")
    (run / "outside.png").symlink_to(secret)
    assert "outside.png" not in load_run(run).pictures


def test_training_does_not_import_matplotlib_and_the_report_needs_no_torch(toy_run):
    training = "import sys, sslhub.engine, sslhub.evaluation, sslhub.cli; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", training], capture_output=True, text=True, env=sslhub_env())
    assert done.stdout.strip() == "False", done.stderr
    reading = (
        f"import sys; from sslhub.report import write_report; write_report([{str(toy_run)!r}], {str(toy_run / 'x.html')!r}); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", reading], capture_output=True, text=True, env=sslhub_env())
    assert done.stdout.strip() == "False", done.stderr


# --- the page in a real browser (Debian's chromium; .ci/run installs it, elsewhere these skip) ---

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); the browser check is skipped"
)
#: Appended to a copy of the page: once everything has loaded, writes each <img>'s decoded width
#: into the DOM that --dump-dom prints (a data: URL that is no image decodes to width 0).
IMAGE_PROBE = (
    "<script>window.addEventListener('load', () => { document.body.setAttribute('data-image-widths', "
    "JSON.stringify([...document.images].map(i => i.complete ? i.naturalWidth : -1))); });</script>"
)


def render(page: Path, tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """Open ``page`` in headless chromium; its DOM after load and the console lines it logged."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *extra,
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Every console message (errors and uncaught exceptions included) is logged as ...:CONSOLE...]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console


def probed_copy(page: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "probed.html"
    copy.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    return copy


@needs_chromium
def test_the_browser_check_sees_console_errors_and_broken_images(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><img src='data:image/png;base64,AAAA'>"
        "<script>undefinedFunction();</script></body></html>"
    )
    dom, console = render(probed_copy(broken, tmp_path), tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console), console
    assert 'data-image-widths="[0]"' in dom


@needs_chromium
def test_the_report_renders_in_a_browser_with_every_image_decoded(toy_run, tmp_path):
    page = toy_run / "report.html"
    dom, console = render(probed_copy(page, tmp_path), tmp_path)
    assert console == [], console
    sources = re.findall(r"<img[^>]*\bsrc=\"([^\"]*)\"", dom)
    assert len(sources) == len(inline_images(page.read_text())) == 4
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.partition(",")[2]).startswith(PNG_SIGNATURE)
    widths = json.loads(re.search(r'data-image-widths="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(widths) == 4 and all(width > 0 for width in widths), widths
    assert "Verdict" in dom  # the page's text made it into the rendered document


@needs_chromium
def test_the_report_screenshots_as_a_non_blank_picture(toy_run, tmp_path):
    shot = tmp_path / "shot.png"
    render(toy_run / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1000,1400")
    from PIL import Image

    with Image.open(shot) as picture:
        assert picture.size == (1000, 1400)
        # a rendered page has text and plots: many distinct colours, not one background
        assert len(picture.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_text_an_objective_wrote_is_shown_escaped(toy_run, tmp_path):
    run = tmp_path / "texts"
    shutil.copytree(toy_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "mlm_masked_samples.txt").write_text("model input: a <b>[MASK]</b> & more\n")
    page = write_report([run], run / "again.html").read_text()
    assert "<h4>mlm_masked_samples.txt</h4><pre>model input: a &lt;b&gt;[MASK]&lt;/b&gt; &amp; more\n</pre>" in page
