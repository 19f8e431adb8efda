"""Every figure the README and the results page state comes from a result file: each
percentage and each ratio (``1.29x``) of a section is found, to the digits shown, among
the numbers of the JSON files the section links, directly or through a page it links
(a JSON file that page names)."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: a percentage or a ratio; a confidence level ("95% interval") is not a figure
FIGURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(%|x\b)(?! (?:interval|confidence))")
LINK = re.compile(r"\]\(([^)#\s]+)")
NAMED_JSON = re.compile(r"[\w.-]+\.json")


def numbers(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    items = obj.values() if isinstance(obj, dict) else obj
    return [v for item in items for v in numbers(item)]


def sources(section: str, page: Path) -> list[Path]:
    """The JSON files a section links, and those named by the pages it links."""
    found = []
    for target in LINK.findall(section):
        path = (page.parent / target).resolve()
        if not path.is_file():
            continue
        if path.suffix == ".json":
            found.append(path)
        elif path.suffix == ".md":
            found += [p for name in NAMED_JSON.findall(path.read_text())
                      if (p := path.parent / name).is_file()]
    return found


def missing_figures(page: Path) -> list[str]:
    """``section: figure`` for each figure of ``page`` that no source of its section
    holds (a percentage as a share or as a percentage, to the digits shown)."""
    text = page.read_text()
    missing = []
    for section in re.split(r"^(?=## )", text, flags=re.M):
        values = [v for p in sources(section, page) for v in numbers(json.loads(
            p.read_text()))]
        for m in FIGURE.finditer(section):
            digits, unit = m.group(1), m.group(2)
            f = float(digits)
            tol = 0.5 * 10.0 ** -(len(digits.split(".")[1]) if "." in digits else 0) + 1e-9
            scales = (1.0, 100.0) if unit == "%" else (1.0,)
            if not any(abs(s * v - f) <= tol for v in values for s in scales):
                head = section.splitlines()[0] if section.strip() else page.name
                missing.append(f"{head}: {m.group(0)}")
    return missing


def test_the_check_finds_a_figure_without_a_source(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"purity": 0.9911, "ratio": [1.294]}))
    (tmp_path / "p.md").write_text("# P\n\n## A\n[r](r.json): 99.11% and 1.29x, "
                                   "95% intervals.\n\n## B\n99.11% alone; 1.3x.\n")
    assert missing_figures(tmp_path / "p.md") == ["## B: 99.11%", "## B: 1.3x"]


def test_every_figure_of_the_readme_and_the_results_has_a_source():
    for page in (ROOT / "README.md", ROOT / "docs" / "results.md"):
        assert missing_figures(page) == [], page.name
