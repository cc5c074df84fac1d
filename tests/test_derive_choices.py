"""`nas derive --which best` (the epoch of the best architecture-step accuracy, as the official GDAS script
keeps beside the last) and `--max-skip` refused for an algorithm without a skip cap."""

import json
import subprocess


def test_which_best_derives_the_epoch_of_the_best_architecture_accuracy(nas_cmd, tmp_path):
    out = tmp_path / "g"
    r = subprocess.run([*nas_cmd, "search", "--algo", "gdas", "--dataset", "synthetic", "data.image_size=8",
                        "--subset", "32", "--channels", "4", "--layers", "3", "--epochs", "4", "--batch-size", "8",
                        "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    accs = [m["arch_acc"] for m in metrics]
    assert all(a is not None and 0 <= a <= 100 for a in accs)
    best_epoch = accs.index(max(accs))  # the first of equals
    r = subprocess.run([*nas_cmd, "derive", str(out), "--which", "best"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    derived = json.loads((out / "genotypes" / f"derived_epoch_{best_epoch:03d}.json").read_text())
    logged = json.loads((out / "genotypes" / f"epoch_{best_epoch:03d}.json").read_text())
    assert derived["normal"] == logged["normal"] and derived["reduce"] == logged["reduce"]
    assert derived["epoch"] == best_epoch
    for args, words in ((["--which", "best", "--epoch", "0"], "leave --epoch out"),
                        (["--which", "first"], "--which must be last or best"),
                        (["--max-skip", "1"], "--max-skip is P-DARTS's cap on skip_connects; a gdas run has none")):
        r = subprocess.run([*nas_cmd, "derive", str(out), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
