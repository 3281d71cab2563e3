"""The main job end to end at toy scale: data -> convert -> validate -> train -> eval -> overlays."""
import json

from workbench.engine.demo import run_demo


def test_demo_pipeline_writes_every_output(tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "data"
    assert run_demo(str(out), str(data), device="cpu", max_iter=3, components=False, train_images=16,
                    val_images=4, progress=False) == 0
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "loss_curve.png", "last.pt", "model_final.pt"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["attributes"]) == {"color", "size"}
    assert "AP" in metrics["segm"] and "AP" in metrics["joint"]
    printed = capsys.readouterr().out
    assert "linear scaling rule" in printed and "segm AP" in printed and "color accuracy" in printed
    assert (data / "train" / "coco.json").is_file() and (data / "val" / "coco.json").is_file()
