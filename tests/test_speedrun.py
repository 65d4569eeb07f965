"""`minigpt speedrun --quick` end to end: every stage runs, is evaluated and leaves a run directory
the other commands take; report.md has every section and report.json every stage; a rerun skips
finished stages and starts again a stage cut short; other settings in the same directory are refused."""
import json
import os

import pytest

from minigpt.cli import main
from minigpt.speedrun import STAGES

SECTIONS = ["# minigpt speedrun: report card", "## Settings", "## Metrics", "## Stages", "## Plots",
            "## Sample conversations"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun") / "run"
    assert main(["speedrun", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_report_has_every_section_and_stage(run):
    md = (run / "report.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    report = json.loads((run / "report.json").read_text())
    assert list(report["stages"]) == [s["name"] for s in STAGES]
    m = {name: st["metrics"] for name, st in report["stages"].items()}
    for name in ("base", "sft", "rl"):
        assert m[name]["val_bpb"] > 0 and 0 <= m[name]["mc_acc_norm"] <= 1, name
    assert m["prepare"]["tokens"] > 0 and 0 <= m["sft"]["graded_all"] <= 1
    assert {"pass1_before", "pass1_after", "passk_before", "passk_after"} <= set(m["rl"])
    assert len(report["samples"]["conversations"]) >= 1 and report["samples"]["stage"] == "rl"
    header = next(line for line in md.splitlines() if line.startswith("| metric |"))
    assert header == "| metric | prepare | base | sft | rl |"


def test_stage_directories_work_with_the_other_commands(run, capsys):
    capsys.readouterr()
    assert main(["chat", str(run / "rl"), "-p", "Who are you?", "--temperature", "0", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["eval", str(run / "sft"), "--max-examples", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["choice"]["builtin"]["n"] == 4


def test_rerun_skips_finished_stages_and_redoes_a_cut_one(run, capsys):
    before = {p: os.path.getmtime(p) for p in run.glob("*/ckpt_*.bin")}
    (run / "rl" / "speedrun.json").unlink()  # as if rl was killed before it finished
    capsys.readouterr()
    assert main(["speedrun", "--quick", "--out", str(run), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("prepare", "base", "sft"):
        assert f"speedrun: {name} finished before" in out, name
    assert "speedrun: rl: minigpt rl" in out and (run / "rl" / "speedrun.json").exists()
    after = {p: os.path.getmtime(p) for p in run.glob("*/ckpt_*.bin")}
    assert {p: t for p, t in after.items() if "rl" not in p.parent.name} == \
           {p: t for p, t in before.items() if "rl" not in p.parent.name}
    assert "rl" in json.loads((run / "report.json").read_text())["stages"]


def test_other_settings_in_the_same_directory_are_refused(run, capsys):
    assert main(["speedrun", "--out", str(run)]) == 2  # the full sizes over a --quick run
    assert "other settings" in capsys.readouterr().err
    assert main(["speedrun", "--preset", "nope"]) == 2


def test_a_directory_not_made_by_a_speedrun_is_left_alone(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "mine.txt").write_text("keep me")
    assert main(["speedrun", "--quick", "--out", str(tmp_path)]) == 2
    assert "not a speedrun's directory" in capsys.readouterr().err
    assert (tmp_path / "base" / "mine.txt").read_text() == "keep me"


def test_a_damaged_marker_is_one_line(run, capsys):
    marker = run / "base" / "speedrun.json"
    good = marker.read_text()
    marker.write_text("{oops")
    try:
        assert main(["speedrun", "--quick", "--out", str(run), "--threads", "1"]) == 2
        assert "speedrun.json: damaged" in capsys.readouterr().err
    finally:
        marker.write_text(good)
