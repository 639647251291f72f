import base64
import json
import re
import subprocess
import sys

import pytest
from tests.report.report_fixtures import SHIFT, make_evals, write_run

from rlft.errors import RlftError
from rlft.eval.bootstrap import paired_bootstrap
from rlft.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    before, after = make_evals()
    run = write_run(tmp_path_factory.mktemp("full"), before, after)
    return run, write_report(run), before, after


def test_report_files_exist_and_pngs_are_valid(full_report):
    run, path, _, _ = full_report
    assert path == run / "report" / "report.html" and path.is_file()
    names = sorted(p.name for p in (run / "report").iterdir())
    assert names == ["before_after.png", "curves.png", "report.html", "summary.json", "table.txt"]  # no temp files
    for png in ("before_after.png", "curves.png"):
        assert (run / "report" / png).read_bytes().startswith(PNG_MAGIC)


def test_html_is_self_contained_with_embedded_pngs(full_report):
    _, path, _, _ = full_report
    page = path.read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 2
    assert all(base64.b64decode(u).startswith(PNG_MAGIC) for u in uris)
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external assets
    assert "<link" not in page and "http://" not in page and "https://" not in page


def test_user_text_is_escaped(full_report):
    _, path, _, _ = full_report
    page = path.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(0)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "reference 0 &amp; more" in page


def test_summary_numbers_match_the_eval_files(full_report):
    run, path, before, after = full_report
    summary = json.loads((run / "report" / "summary.json").read_text())
    rows = summary["rows"]
    assert rows["metric"]["before"] == pytest.approx(before["metric"])
    assert rows["metric"]["after"] == pytest.approx(after["metric"])
    assert rows["metric"]["change"] == pytest.approx(after["metric"] - before["metric"])
    assert rows["reward"]["change"] == pytest.approx(0.25)
    assert rows["kl"]["before"] is None and rows["kl"]["after"] == 0.0123
    boot = paired_bootstrap(before["per_example"], after["per_example"])
    assert rows["metric"]["ci"]["low"] == pytest.approx(boot.low)
    assert summary["bootstrap"]["high"] == pytest.approx(boot.high)
    assert summary["second_bootstrap"]["low"] == 1.0 and summary["second_bootstrap"]["significant"]
    assert {k: summary["buckets"][k]["delta"] for k in SHIFT} == SHIFT
    assert summary["verdict"][1] == "BLEU +1.00 (95% CI +1.00 to +1.00): improved"
    # The torn last line of metrics.jsonl is skipped, NaN becomes null (strict JSON).
    assert summary["training"]["train_lines"] == 30 and summary["training"]["last_step"] == 30
    assert summary["training"]["last_eval"]["tail"] is None
    # The HTML shows the same verdict and the same change.
    page = path.read_text(encoding="utf-8")
    assert summary["verdict"][0] in page and f"{rows['metric']['change']:+.2f}" in page
    assert (run / "report" / "table.txt").read_text().startswith("before vs after on 12 validation examples")


def test_curves_only_without_after_eval(tmp_path):
    before, _ = make_evals()
    run = write_run(tmp_path, before, None)
    out = write_report(run, out=tmp_path / "elsewhere")
    assert out == tmp_path / "elsewhere" / "report.html"
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "training curves only" in page
    summary = json.loads((tmp_path / "elsewhere" / "summary.json").read_text())
    assert "rows" not in summary and summary["plots"] == ["curves.png"]
    assert not (run / "report").exists()


def test_comparison_without_metrics_file(tmp_path):
    before, after = make_evals()
    run = write_run(tmp_path, before, after)
    (run / "metrics.jsonl").unlink()
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1 and "Training curves" not in page


def test_nothing_to_report_and_bad_files_raise_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RlftError, match="nothing to report"):
        write_report(empty)
    run = write_run(tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(RlftError, match=r"metrics\.jsonl:2: not valid JSON"):
        write_report(run)
    before, after = make_evals()
    run = write_run(tmp_path / "mismatch", before, dict(after, per_example=after["per_example"][:5], ids=None))
    with pytest.raises(RlftError, match=r"after\.json: field '\w+': \d+ items for 5 per-example scores") as err:
        write_report(run)
    assert "\n" not in str(err.value)


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, rlft.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
