"""A method run refused after claiming its folder leaves nothing (issue 19, item 7). Moved frontier
folders (item 5) are tested on the demo's folder in test_demo.py."""

from conftest import run_cli

ENV = {"OMP_NUM_THREADS": "1"}


def test_a_method_run_refused_after_claiming_its_folder_leaves_nothing(tmp_path):
    """A teacher at chance is refused by the first KD stage, after the method and the stage have
    claimed their folders: the refusal is one line and the folders go (issue 19, item 7)."""
    from conftest import assert_one_line_error
    from fixtures.finegrained import BASE, tiny_data

    from relucut.train import train

    teacher = tmp_path / "teacher"
    train(BASE, teacher, data=tiny_data(), progress=False)  # one epoch of 192 images: at chance
    out = tmp_path / "snl"
    proc = run_cli("snl", "resnet18", "--dataset", "digits", "--base-width", "4", "--budget", "1000",
                   "--teacher", teacher, "--search-epochs", "1", "--finetune-epochs", "1", "--out", out, env=ENV)
    assert proc.returncode == 2
    assert_one_line_error(proc, "at chance")
    assert not out.exists()
