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


def test_library_errors_name_arguments_and_the_cli_names_flags(capsys, tmp_path):
    """Errors raised by the library speak its API (argument names); the command line
    shows the same error with its flags."""
    import torch
    from torch import nn

    from repinterp.app.models import load_model
    from repinterp.core.errors import UserError
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")
    with pytest.raises(UserError) as info:
        load_model(model_file=str(tmp_path / "whole.pt"))
    assert "trust_pickle=True" in str(info.value) and "--" not in str(info.value)
    code, err = run(capsys, "layers", "--model", str(tmp_path / "whole.pt"))
    assert code == 2 and "--trust-pickle" in err and "trust_pickle" not in err
    with pytest.raises(UserError, match=r"give either arch=NAME \(with weights=FILE\)"):
        load_model()
    code, err = run(capsys, "layers")
    assert code == 2 and "give either --arch NAME [--weights FILE] or --model FILE" in err
