import pytest

from repinterp.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_checkpoint_is_one_line_exit_2(capsys, tmp_path):
    code, err = run(capsys, "explain", "--model", str(tmp_path / "nope.pt"),
                    "--data", str(tmp_path))
    assert code == 2
    assert err.startswith("repinterp: error:") and "does not exist" in err
    assert "\n" not in err and "Traceback" not in err


def test_garbage_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, err = run(capsys, "explain", "--model", str(bad), "--data", str(tmp_path))
    assert code == 2 and "cannot be loaded safely" in err and "--trust-pickle" in err
    assert "\n" not in err


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["explain", "--no-such-option"])
    assert e.value.code == 2
    assert main(["explain"]) == 2
    assert "give either --arch" in capsys.readouterr().err
    assert main(["explain", "--arch", "resnet18", "--layer", "layer3"]) == 2
    assert capsys.readouterr().err.strip() == "repinterp: error: --data is required"
