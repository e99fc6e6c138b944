"""Fixed-layout templates: the shipped one loads, bad ones fail at load with the file named."""

from __future__ import annotations

import pytest

from ocrstream.ocr.templates import UnknownTemplateError, get_template, load_template, load_templates
from tools.render_samples import LAB_FIELDS, form_value_box


def test_shipped_lab_report_matches_the_sample_form_geometry():
    template = get_template("lab-report")
    assert [r.name for r in template.regions][:2] == ["patient_id", "sample_date"]
    assert len(template.regions) == len(LAB_FIELDS)
    for row, region in enumerate(template.regions, start=1):
        assert region.box == pytest.approx(form_value_box(row), abs=1e-3)
    assert region.pixel_box(900, 560) == (410, 451, 860, 502)  # floor of x0/y0, round of x1/y1


@pytest.mark.parametrize("body,message", [
    ("name: t\nregions: [{name: a, box: [0.5, 0, 0.4, 1]}]", "x0 < x1"),
    ("name: t\nregions: [{name: a, box: [0, 0, 1, 1], type: code, unit: RM}]", "integer and decimal"),
    ("name: t\nregions: [{name: a, box: [0, 0, 1, 1], type: number}]", "type"),
    ("name: t\nregions: [{name: a, box: [0, 0, 1, 1], regex: '('}]", "regex"),
    ("name: t\nregions: []", "regions"),
])
def test_invalid_templates_fail_at_load(tmp_path, body, message):
    path = tmp_path / "t.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as info:
        load_template(path)
    assert str(path) in str(info.value)


def test_extra_dir_adds_and_overrides(tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\nregions: [{name: total, box: [0, 0, 1, 0.1], type: decimal}]\n")
    (tmp_path / "lab.yaml").write_text("name: lab-report\nregions: [{name: only, box: [0, 0, 1, 1]}]\n")
    templates = load_templates(str(tmp_path))
    assert templates["mine"].regions[0].spec().type == "decimal"
    assert [r.name for r in templates["lab-report"].regions] == ["only"]
    with pytest.raises(UnknownTemplateError, match="known: lab-report, mine"):
        get_template("nope", str(tmp_path))

