from workbench.cli import main
from workbench.harness.runners import default_config, run_all, run_criterion, run_matcher


def test_every_component_runs_alone_and_passes_its_checks():
    report = run_all()
    assert [c.name for c in report.components] == [
        "pixel decoder", "transformer decoder", "Hungarian matcher", "set criterion", "full model"]
    assert report.ok, str(report)
    text = str(report)
    assert "all components ok" in text and "loss_attr_color" in text


def test_harness_detects_a_matcher_without_attribute_costs():
    """The harness check is live: turning attribute costs off flips the ambiguous case and fails the check."""
    rep = run_matcher(default_config(attribute_cost_weight=0.0))
    assert not rep.checks["attribute cost decides the ambiguous case"]
    assert not rep.ok


def test_criterion_report_has_every_term():
    rep = run_criterion(default_config())
    assert set(rep.data["losses"]) == {"loss_ce", "loss_attr_color", "loss_attr_size", "loss_mask", "loss_dice"}


def test_components_command(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert "Hungarian matcher" in out and "all components ok" in out
