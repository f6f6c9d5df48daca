"""docs/ft_in_your_loop.md: its code, run as written with the shipped teacher and
paraphraser and a few batches for `loader`, trains the student and translator with FT
while the teacher and paraphraser stay as they were."""

import re
from pathlib import Path

import torch

from utils.train import classification_metrics  # noqa: F401  (the repository imports cleanly first)

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "ft_in_your_loop.md"


def test_the_documented_loop_trains_with_ft(monkeypatch):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(REPO)
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    seen = []

    class Loader:  # the same batch six times, the losses recorded as the loop computes them
        def __iter__(self):
            for _ in range(6):
                yield x, y

    scope = {"loader": Loader()}
    exec(compile(code.replace("logits, losses = task(x, y)",
                              "logits, losses = task(x, y); seen.append({k: v.item() for k, v in losses.items()})"),
                 str(DOC), "exec"), {**scope, "seen": seen}, scope)
    task, teacher, paraphraser = scope["task"], scope["teacher"], scope["paraphraser"]
    assert [sorted(s) for s in seen] == [["ce", "ft"]] * 6
    assert seen[-1]["ft"] < seen[0]["ft"] and seen[-1]["ce"] < seen[0]["ce"]
    assert sorted(task.trainable()) == ["model", "translator"]
    shipped = torch.load(REPO / "results/shipped/teacher-resnet56/checkpoint.pt", weights_only=False)
    assert all(torch.equal(v, shipped["modules"]["model"][k]) for k, v in teacher.state_dict().items())
    assert not teacher.training and not paraphraser.training
    assert all(p.grad is None for p in paraphraser.parameters())
