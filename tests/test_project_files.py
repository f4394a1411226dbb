"""The licence, the citation and the credits: present, well formed and complete."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_is_the_one_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "THIRD_PARTY.md" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"


def test_citation_cff_has_the_fields_cff_1_2_requires():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    paper = cff["preferred-citation"]
    assert paper["type"] == "article" and paper["year"] == 2026 and "Noise2Map" in paper["title"]
    assert [a["family-names"] for a in paper["authors"]] == ["Shibli", "Nascetti", "Ban"]
    assert set(cff) <= {"cff-version", "message", "title", "type", "authors", "license", "keywords",
                        "preferred-citation", "version", "date-released", "repository-code", "abstract"}


def test_every_re_implemented_source_the_readme_names_is_credited():
    readme = (ROOT / "docs" / "models.md").read_text()
    credits = (ROOT / "THIRD_PARTY.md").read_text()
    cited = set(re.findall(r"re-implemented \(([\w.-]+/[\w.-]+) ([0-9a-f]{7})", readme))
    assert len(cited) >= 7
    for repo, commit in cited:
        assert f"{repo} ({commit})" in credits, repo
    for source in ("alishibli97/noise2map (731e9f1", "SebastianHafner/SemiSupervisedMultiModalCD (704d4fd)",
                   "DIUx-xView/xView2_baseline (821d9f8)", "CC BY-NC-SA 4.0", "CC BY-SA 4.0"):
        assert source in credits, source


def test_the_configuration_reference_is_the_schemas():
    from noise2map.config_reference import markdown

    assert (ROOT / "docs" / "configuration.md").read_text() == markdown(), (
        "docs/configuration.md is out of date: python -m noise2map.config_reference docs/configuration.md")
    page = markdown()
    for key in ("`preparation.spacenet7_label_raster`", "`training.accumulation`", "`selection`", "`warm_start`"):
        assert key in page


def test_the_documentation_home_is_the_readme():
    home = (ROOT / "docs" / "index.md").read_text()
    assert home == (ROOT / "README.md").read_text().replace("](docs/", "](")


def test_the_readme_fits_a_few_screens_and_speaks_of_the_software():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_screen = "\n".join(readme.splitlines()[:50])
    assert "## Status" in first_screen and "pip install" in first_screen
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text().lower()
        for phrase in ("was lent", "this session", "this workplace", "the issue's", "this project's machines"):
            assert phrase not in text, (page.name, phrase)
