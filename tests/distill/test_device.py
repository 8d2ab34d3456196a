"""Device placement: the trainer feeds every model tensors on that model's device, whatever torch's default
device is (on a GPU the default is the CPU and the model is not); a missing GPU is a one-line error; the GPU
check script's structure, run on a CPU."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from agents.agent import Context
from agents.models import resolve_device
from bench import gpu_check
from commands import play
from distill import run
from distill.config import DistillConfig
from distill.trainer import Distiller, Sample

CONTEXT = Context("The secret colour is blue.", "knowledge", id="fact")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")


def samples(tokenizer: PreTrainedTokenizerBase) -> list[Sample]:
    """Two replies of different lengths to two questions, the teacher's prompt holding the context."""
    rows = []
    for question, reply in (("Which colour?", " blue, of course"), ("And the sky?", " blue")):
        student = [{"role": "user", "content": question}]
        teacher = [{"role": "system", "content": CONTEXT.text}, *student]
        rows.append(Sample(student, teacher, tokenizer(reply, add_special_tokens=False)["input_ids"]))
    return rows


@contextmanager
def inputs_checked(model: torch.nn.Module) -> Iterator[None]:
    """Every tensor handed to ``model``'s decoder must be on the model's device."""
    device = next(model.parameters()).device

    def check(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                assert value.device == device, f"a {value.device} tensor reached a model on {device}"

    handle = model.get_decoder().register_forward_pre_hook(check, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("method", ["opcd", "offpolicy", "sft"])
def test_backward_feeds_the_model_on_its_own_device(
    method: str, tiny_llama: LlamaForCausalLM, default_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Torch's default device made to differ from the model's ("meta" against "cpu"), as "cpu" differs from
    "cuda" on a GPU: a tensor made without naming the model's device lands elsewhere and fails."""
    config = DistillConfig(env="qa", model="tiny", method=method, lora_r=4, max_batch_tokens=1, seed=0)
    distiller = Distiller(config, copy.deepcopy(tiny_llama), default_tokenizer, CONTEXT)
    batch = samples(default_tokenizer)
    with inputs_checked(distiller.student), torch.device("meta"):
        out = distiller.backward(batch)
    assert out.loss.device.type == "cpu" and torch.isfinite(out.loss)
    assert out.token_loss.numel() == sum(len(s.reply_ids) for s in batch)
    assert all(p.grad is not None and p.grad.device.type == "cpu" for p in distiller.trainable)


@pytest.mark.parametrize(
    ("built", "gpus", "device", "error"),
    [
        (False, 0, "cuda", "--device cuda: this torch build has no CUDA"),
        (True, 0, "cuda:0", "--device cuda:0: no GPU visible"),
        (True, 2, "cuda:2", r"--device cuda:2: only 2 GPU\(s\) visible"),
        (True, 2, "cuda:1", None),
        (True, 0, "auto", None),
    ],
)
def test_resolve_device_names_what_is_missing(
    built: bool, gpus: int, device: str, error: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: built)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if error is None:
        assert resolve_device(device) == ("cpu" if device == "auto" else device)
    else:
        with pytest.raises(ValueError, match=error):
            resolve_device(device)


def one_line_error(capsys: pytest.CaptureFixture[str], main: Any, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@NO_CUDA
def test_distill_run_without_a_gpu_is_a_one_line_error(
    tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--env", "qa", "--env-context", "handbook", "--model", tiny_model_dir, "--out-dir", str(tmp_path / "run"),
        "--store", str(tmp_path / "exp.db"), "--device", "cuda",
    ]
    err = one_line_error(capsys, run.main, argv)
    assert "--device cuda" in err and ("no CUDA" in err or "no GPU" in err)
    assert list(tmp_path.iterdir()) == []  # nothing written


@NO_CUDA
def test_play_without_a_gpu_is_a_one_line_error(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--env", "qa", "--model", tiny_model_dir, "--store", str(tmp_path / "exp.db"), "--episodes", "1", "--device", "cuda:1"]
    err = one_line_error(capsys, play.main, argv)
    assert "--device cuda:1" in err and ("no CUDA" in err or "no GPU" in err)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_gpu_check_reports_a_failed_check_on_one_line(tmp_path: Path) -> None:
    check = gpu_check.Check("bad", ["json.tool", str(tmp_path / "missing.json")], 60, lambda stdout: {})
    result = gpu_check.run_check(check, tmp_path, seconds_left=60)
    assert result.status == "FAILED" and result.note.startswith("exit 2: ") and "\n" not in result.note
    assert "missing.json" in (tmp_path / "bad.log").read_text()


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tiny_model_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--device cpu``: the hf checks run with tiny sizes, the vllm ones are skipped (~45 s)."""
    code = gpu_check.main(["--device", "cpu", "--model", tiny_model_dir, "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    status = {line.split()[1]: line.split()[0] for line in out.splitlines()[:4]}
    assert status == {"distill-hf": "ok", "play-vllm": "skipped", "rollout": "ok", "distill-vllm": "skipped"}
    assert "reply tokens/s" in out and "naive: one generate per episode turn: tokens/s" in out
