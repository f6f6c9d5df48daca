"""Every transfer method and paraphraser variant: built, frozen parts frozen, trained end
to end through the real scripts, resumed exactly, and refused clearly when shapes
cannot match; Table 4's parameter counts; a short run on real CIFAR-10."""

import pytest
import torch
from torch import nn

from helpers import (checkpoint, final, interrupt_at, metrics, run, run_cli, tiny_runs,  # noqa: F401
                     train_paraphraser, train_student, train_teacher)
from models import build_model
from paraphraser import Paraphraser
from translator import Translator
from utils.errors import UserError
from models.features import forward_tap, group_shapes
from utils.distill import KD, METHODS, Frozen
from utils.distill.at import pair_groups
from utils.distill.base import student_group_for
from utils.distill.ktan import FeatureDiscriminator
from utils.train import Interrupted

# The loss parts each method logs (metrics.jsonl "loss_<part>").
LOSS_PARTS = {
    "ce": {"ce"}, "kd": {"ce", "kd"}, "at": {"ce", "at"}, "fact": {"ce", "fact"}, "ft": {"ce", "ft"},
    "at+kd": {"ce", "kd", "at"}, "ft+kd": {"ce", "kd", "ft"}, "ktan": {"ce", "kd", "fm", "adv", "disc"},
}


def student_args(method: str, *extra: str):
    return train_student.get_args_parser().parse_args(
        ["--method", method, "--out", "unused", "--teacher", "unused", *extra])


# ---------------------------------------------------------------- Table 4 / shapes

def test_table4_parameter_counts():
    """Table 4 (WRN-40-2 teacher, C = 128, k = 0.5): 0.07M, 0.22M, 0.26M for 1, 2, 3 layers.

    Our paraphraser's *encoder* has exactly those counts (73,792 / 221,376 / 258,304
    without BN; BN adds 2 per channel); encoder + decoder is about twice as much
    (0.15M / 0.44M / 0.52M), so the paper counts the half that makes the factor.
    """
    def count(module):
        return sum(p.numel() for p in module.parameters())

    paper = {1: 0.07, 2: 0.22, 3: 0.26}
    expected_encoder = {(1, False): 73_792, (2, False): 221_376, (3, False): 258_304,
                        (1, True): 73_920, (2, True): 221_760, (3, True): 258_816}
    expected_total = {(1, False): 147_648, (2, False): 442_816, (3, False): 516_672,
                      (1, True): 148_032, (2, True): 443_712, (3, True): 517_824}
    for (layers, bn), n in expected_encoder.items():
        p = Paraphraser(128, k=0.5, bn=bn, layers=layers)
        assert count(p.encoder) == n
        assert count(p) == expected_total[(layers, bn)]
        assert round(n / 1e6, 2) == paper[layers]                      # the paper's figure
        assert abs(count(p) / 1e6 - 2 * paper[layers]) < 0.1 * 2 * paper[layers]  # not the total's


def test_cae_factor_and_translator_shapes():
    """CAE: three stride-2 convs take 64x8x8 to 512x1x1; the translator uses the same strides."""
    p = Paraphraser(64, kind="cae", bn=True)
    x = torch.rand(2, 64, 8, 8)
    assert p.encode(x).shape == (2, 512, 1, 1)
    assert p(x).shape == x.shape
    t = Translator(16, p.factor_channels, kind="cae", layers=3)
    assert t(torch.rand(2, 16, 8, 8)).shape == (2, 512, 1, 1)
    assert Translator(16, 128, kind="cae", layers=2)(torch.rand(2, 16, 8, 8)).shape == (2, 128, 2, 2)


def test_student_group_for_vgg13_under_wrn():
    """Table 1's VGG-13 (blocks 32, 16, 8, 4, 2 px) under a WRN (last group 8x8): block 2."""
    shapes_s = group_shapes(build_model("vgg13", 10), (32, 32))
    shapes_t = group_shapes(build_model("wrn_16_1", 10), (32, 32))
    assert [s[-1] for s in shapes_s] == [32, 16, 8, 4, 2]
    assert student_group_for(shapes_s, -1, shapes_t[-1][-2:]) == 2
    assert student_group_for(shapes_s, 1, shapes_t[1][-2:]) == 1      # sizes agree: kept
    assert pair_groups(shapes_s, shapes_t, "AT") == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(UserError, match="no student group"):
        student_group_for(shapes_s, -1, (7, 7))


def test_pair_groups_in_order_needs_equal_sizes():
    assert pair_groups([(16, 32, 32), (32, 16, 16)], [(64, 32, 32), (128, 16, 16)], "AT") == [(0, 0), (1, 1)]
    with pytest.raises(UserError, match="group 1 of the student"):
        pair_groups([(16, 32, 32), (32, 8, 8)], [(64, 32, 32), (128, 16, 16)], "AT")


# ---------------------------------------------------------------- tasks built by the registry

def _build(method, *extra, student="resnet20", teacher="resnet20", paraphrasers=()):
    torch.manual_seed(0)
    config = train_student.resolve(student_args(method, *extra, *(
        ["--paraphraser", "unused"] if METHODS[method].paraphraser and paraphrasers else [])))
    teacher, student = (build_model(n, 10) if isinstance(n, str) else n for n in (teacher, student))
    frozen = Frozen(teacher.eval().requires_grad_(False), list(paraphrasers), (32, 32))
    kd = KD(config.kd_T, config.kd_alpha) if METHODS[method].kd else None
    return METHODS[method].build(config.method_options(), student, frozen, kd)[0]


def _frozen_paraphraser(channels=64, **kw):
    return Paraphraser(channels, **kw).eval().requires_grad_(False)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ce"])
def test_frozen_parts_get_no_gradient_and_stay_in_eval(method):
    paraphrasers = [(_frozen_paraphraser(), -1)] if METHODS[method].paraphraser else []
    task = _build(method, paraphrasers=paraphrasers).train()
    frozen = [task.teacher] + ([task.paraphraser] if METHODS[method].paraphraser else [])
    assert all(not m.training for f in frozen for m in f.modules())
    assert task.student.training
    before = {k: v.clone() for f in frozen for k, v in f.state_dict().items()}
    _, losses = task(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert set(losses) == LOSS_PARTS[method] - {"disc"}
    sum(losses.values()).backward()
    assert all(p.grad is None for f in frozen for p in f.parameters())
    trainable = task.trainable()
    assert "model" in trainable and "teacher" not in trainable and "paraphraser" not in trainable
    for name, module in trainable.items():
        assert all(p.grad is not None for p in module.parameters()), name
    after = {k: v for f in frozen for k, v in f.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    if method == "ktan":
        # the discriminator: not in the main optimizer, no gradient from the student's loss,
        # updated by its own step
        assert "discriminator" not in trainable and set(trainable) == {"model", "t2s"}
        assert all(p.grad is None for p in task.discriminator.parameters())
        d_before = [p.clone() for p in task.discriminator.parameters()]
        assert set(task.auxiliary_step()) == {"disc"}
        assert any(not torch.equal(a, b) for a, b in zip(d_before, task.discriminator.parameters()))
        assert task.auxiliary_step() == {}  # nothing stashed: no second update


def test_ft_on_every_group_has_a_translator_per_group():
    paraphrasers = [(_frozen_paraphraser(c), g) for c, g in ((16, 0), (32, 1), (64, -1))]
    task = _build("ft", "--ft-groups", "all", paraphrasers=paraphrasers)
    assert isinstance(task.translator, nn.ModuleList) and len(task.translator) == 3
    _, losses = task(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))
    assert set(losses) == {"ce", "ft_g0", "ft_g1", "ft_g2"}


def test_vgg13_student_uses_the_8x8_block_for_ft_and_ktan(capsys):
    task = _build("ft", student="vgg13", teacher="wrn_16_1", paraphrasers=[(_frozen_paraphraser(), -1)])
    assert [(link.student_group, link.teacher_group) for link in task.links] == [(2, 2)]
    assert "student group 2" in capsys.readouterr().err
    assert task.translator.config["student_channels"] == 256
    ktan = _build("ktan", student="vgg13", teacher="wrn_16_1")
    assert ktan.student_group == 2 and ktan.t2s.config == dict(teacher_channels=64, student_channels=256)


def test_translator_depth_is_its_own_flag():
    """Table 4's depth ablation: a 1-layer paraphraser keeps a 3-layer translator unless
    --translator-layers says otherwise."""
    para = [(_frozen_paraphraser(layers=1), -1)]
    assert _build("ft", paraphrasers=para).translator.config["layers"] == 3
    assert _build("ft", "--translator-layers", "1", paraphrasers=para).translator.config["layers"] == 1
    assert _build("ft", "--translator-layers", "2", paraphrasers=[(_frozen_paraphraser(), -1)]
                  ).translator.config["layers"] == 2


def test_at_takes_a_wide_resnets_raw_last_group():
    """AT / F-ActT read a WRN's last group before the final BN-ReLU (the AT code's g2), by
    asking for the "raw" tap; FT keeps the post-BN-ReLU map the classifier pools."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for method in ("at", "fact"):
        task = _build(method, student="wrn_16_1", teacher="wrn_16_1")
        assert (task.tap_s, task.tap_t) == ("raw", "raw")
        for net, tap in ((task.student, task.tap_s), (task.teacher, task.tap_t)):
            net.eval()
            raw = {}
            hook = net.groups[-1].register_forward_hook(lambda m, i, o: raw.setdefault("g", o))
            logits, feats = forward_tap(net, x, tap)
            hook.remove()
            torch.testing.assert_close(feats[-1], raw["g"], rtol=0, atol=0)
            assert (feats[-1] < 0).any()  # a residual sum, not a ReLU output
            assert (net(x)[1][-1] >= 0).all()  # the network's own forward is as it was
    ft = _build("ft", student="wrn_16_1", teacher="wrn_16_1", paraphrasers=[(_frozen_paraphraser(), -1)])
    assert (ft.tap_s, ft.tap_t) == ("post", "post")
    assert all((net.eval()(x)[1][-1] >= 0).all() for net in (ft.student, ft.teacher))


@pytest.mark.parametrize("method", ["at", "fact"])
def test_building_a_method_leaves_the_networks_as_they_were(method):
    """A method asks for the tap it needs (models/features.py) instead of changing the frozen
    teacher or the student: after building AT (or F-ActT) on WRNs, both networks' plain
    forward gives what it gave before, bit for bit, and the task's loss uses the raw maps."""
    from utils.distill.at import attention_transfer_loss

    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    student = build_model("wrn_16_1", 10).eval()
    teacher = build_model("wrn_16_2" if method == "at" else "wrn_16_1", 10).eval()  # F-ActT: equal widths
    with torch.no_grad():
        before = [net(x) for net in (student, teacher)]
    attrs = [dict(vars(net)) for net in (student, teacher)]
    task = _build(method, student=student, teacher=teacher)
    assert task.student is student and task.teacher is teacher
    with torch.no_grad():
        task.eval()(x, y)
        after = [net(x) for net in (student, teacher)]
    assert [dict(vars(net)) for net in (student, teacher)] == attrs
    for (logits, feats), (logits_a, feats_a) in zip(before, after):
        assert torch.equal(logits, logits_a) and all(torch.equal(a, b) for a, b in zip(feats, feats_a))
    if method == "at":
        with torch.no_grad():
            raw_s, raw_t = forward_tap(student, x, "raw")[1], forward_tap(teacher, x, "raw")[1]
            plain = attention_transfer_loss(before[0][1], before[1][1])
            loss = task(x, y)[1]["at"]
        torch.testing.assert_close(loss, task.beta * attention_transfer_loss(raw_s, raw_t))
        assert not torch.allclose(loss, task.beta * plain)  # the raw last group, not the plain map


def test_a_method_asking_for_an_undeclared_tap_is_a_clear_error():
    from utils.distill.base import Distillation

    with pytest.raises(UserError, match="resnet20 has no 'pre_bn' feature tap; it declares post, raw"):
        Distillation(build_model("resnet20", 10), build_model("resnet56", 10), tap_s="pre_bn")


def test_kd_form_default_and_record(tmp_path):
    """--kd-form: at2017 (the AT code the paper follows) for the paper's baselines,
    hinton for KTAN; resolve() sets it so args.json records the form used."""
    import train_student

    def resolved(method, *extra):
        return train_student.resolve(student_args(method, *extra))
    for method, want in (("kd", "at2017"), ("at+kd", "at2017"), ("ft+kd", "at2017"), ("ktan", "hinton")):
        assert resolved(method, *(["--paraphraser", "p"] if "ft" in method else [])).kd_form == want
    assert resolved("kd", "--kd-form", "hinton").kd_form == "hinton"
    config = resolved("ce")  # a method without KD records none (it shares cells with older runs)
    assert config.kd_form is None and config.fact_reduction is None
    assert resolved("fact").fact_reduction == "positions"


def test_ktan_discriminator_shape():
    assert FeatureDiscriminator(64)(torch.rand(3, 64, 8, 8)).shape == (3, 1)
    assert FeatureDiscriminator(512)(torch.rand(3, 512, 2, 2)).shape == (3, 1)


# ---------------------------------------------------------------- end to end, tiny data

def _student(tiny_runs, out, method, *extra, iters=4):
    argv = [*tiny_runs.args(out, iters=iters), "--method", method, "--arch", "resnet20", *extra]
    if METHODS[method].teacher:
        argv += ["--teacher", tiny_runs.teacher]
    return run(train_student, argv)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_end_to_end(method, tiny_runs, tmp_path):
    extra = ["--paraphraser", tiny_runs.paraphraser()] if METHODS[method].paraphraser else []
    _student(tiny_runs, tmp_path, method, *extra)
    lines = metrics(tmp_path)
    assert [m["iter"] for m in lines] == [2, 4]
    parts = {k.removeprefix("loss_") for k in lines[-1] if k.startswith("loss_")}
    assert parts == LOSS_PARTS[method]
    ckpt = checkpoint(tmp_path)
    assert {"arch", "num_classes", "dataset", "method"} <= set(ckpt)
    assert ckpt["method"] == method
    expected_modules = {"model"} | ({"translator"} if METHODS[method].paraphraser else set()) \
        | ({"t2s"} if method == "ktan" else set())
    assert set(ckpt["modules"]) == expected_modules
    assert (ckpt["auxiliary"] is not None) == (method == "ktan")
    if METHODS[method].paraphraser:
        assert ckpt["translator_config"] == dict(student_channels=64, factor_channels=32, bn=True,
                                                 layers=3, kind="conv")
    assert 0 <= final(tmp_path)["test_error_last"] <= 100


@pytest.mark.parametrize("flags", [["--kind", "cae"], ["--kind", "rae"], ["--layers", "1"], ["--layers", "2"],
                                   ["--no-bn"]], ids=["cae", "rae", "layers1", "layers2", "no-bn"])
def test_paraphraser_variants_and_their_students(flags, tiny_runs, tmp_path):
    """Each paraphraser kind trains, and the student builds the matching translator."""
    para = tiny_runs.paraphraser(*flags)
    para_ckpt = checkpoint(para)
    config = para_ckpt["paraphraser_config"]
    if flags[-1] == "rae":
        assert config["k"] == 2.0 and para_ckpt["paraphraser_kind"] == "rae"
        assert metrics(para)[-1]["loss_factor_l1"] > 0
    _student(tiny_runs, tmp_path, "ft", "--paraphraser", para)
    translator = checkpoint(tmp_path)["translator_config"]
    # Three translator layers whatever the paraphraser's depth (Table 4 varies the
    # paraphraser only); a CAE translator matches the encoder's stride-2 layers.
    assert (translator["layers"], translator["kind"], translator["bn"]) == \
        (config["layers"] if config["kind"] == "cae" else 3, config["kind"], config["bn"])
    assert translator["factor_channels"] == {"cae": 512, "rae": 128}.get(flags[-1], 32)


def test_p2_trains_and_differs_from_p1(tiny_runs, tmp_path):
    para = tiny_runs.paraphraser()
    _student(tiny_runs, tmp_path / "p1", "ft", "--paraphraser", para)
    _student(tiny_runs, tmp_path / "p2", "ft", "--paraphraser", para, "--p", "2")
    ft1, ft2 = metrics(tmp_path / "p1")[0]["loss_ft"], metrics(tmp_path / "p2")[0]["loss_ft"]
    assert 0 < ft2 < ft1  # normalized factors: |d|^2 < |d| elementwise


def test_no_paraphraser_matches_the_teacher_map(tiny_runs, tmp_path):
    _student(tiny_runs, tmp_path, "ft", "--no-paraphraser")
    ckpt = checkpoint(tmp_path)
    assert ckpt["translator_config"]["factor_channels"] == 64  # C_t
    assert "loss_ft" in metrics(tmp_path)[-1]


def test_no_translator_needs_k_equal_cs_over_ct(tiny_runs, tmp_path, capsys):
    _student(tiny_runs, tmp_path / "ok", "ft", "--no-translator", "--paraphraser", tiny_runs.paraphraser("--k", 1))
    assert set(checkpoint(tmp_path / "ok")["modules"]) == {"model"}
    argv = [*tiny_runs.args(tmp_path / "bad"), "--method", "ft", "--teacher", tiny_runs.teacher,
            "--no-translator", "--paraphraser", tiny_runs.paraphraser()]
    code, err = run_cli(train_student, argv, capsys)
    assert code == 2 and "--k 1 (k = C_s / C_t)" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli(train_student, [*argv[:-1], tiny_runs.paraphraser("--kind", "cae")], capsys)
    assert code == 2 and "height and width differ" in err


def test_ft_on_every_group_end_to_end(tiny_runs, tmp_path, capsys):
    paras = [tiny_runs.paraphraser("--group", 0), tiny_runs.paraphraser("--group", 1), tiny_runs.paraphraser()]
    _student(tiny_runs, tmp_path / "all", "ft", "--ft-groups", "all", "--paraphraser", *paras[::-1])
    ckpt = checkpoint(tmp_path / "all")
    assert ckpt["groups"] == [[0, 0], [1, 1], [2, 2]]
    assert [c["student_channels"] for c in ckpt["translator_config"]] == [16, 32, 64]
    assert {"loss_ft_g0", "loss_ft_g1", "loss_ft_g2"} <= set(metrics(tmp_path / "all")[-1])
    base = [*tiny_runs.args(tmp_path / "bad"), "--method", "ft", "--teacher", tiny_runs.teacher]
    code, err = run_cli(train_student, [*base, "--ft-groups", "all", "--paraphraser", *paras[:2]], capsys)
    assert code == 2 and "one --paraphraser per teacher group" in err
    code, err = run_cli(train_student, [*base, "--paraphraser", paras[0]], capsys)
    assert code == 2 and "not the last" in err
    code, err = run_cli(train_student, [*base, "--paraphraser", *paras], capsys)
    assert code == 2 and "--ft-groups last takes one" in err


def test_paraphraser_of_another_teacher_is_refused(tiny_runs, tmp_path, capsys):
    other = tmp_path / "other-teacher"
    run(train_teacher, [*tiny_runs.args(other), "--arch", "resnet20", "--seed", "1"])
    argv = [*tiny_runs.args(tmp_path / "bad"), "--method", "ft", "--teacher", other,
            "--paraphraser", tiny_runs.paraphraser()]
    code, err = run_cli(train_student, argv, capsys)
    assert code == 2 and "trained on another teacher" in err


@pytest.mark.parametrize("argv, message", [
    (["--method", "kd"], "needs --teacher"),
    (["--method", "ft", "--teacher", "T"], "needs --paraphraser"),
    (["--method", "at", "--teacher", "T", "--no-translator"], "applies to Factor Transfer only"),
    (["--method", "kd", "--teacher", "T", "--paraphraser", "P"], "applies to Factor Transfer only"),
    (["--method", "ft", "--teacher", "T", "--paraphraser", "P", "--no-paraphraser"], "drop --paraphraser"),
    (["--method", "kd", "--teacher", "T", "--kd-alpha", "1.5"], "--kd-alpha must lie in [0, 1]"),
    (["--method", "ktan", "--teacher", "T", "--ktan-adv", "-1"], "--ktan-adv must not be negative"),
], ids=["kd-no-teacher", "ft-no-paraphraser", "at-no-translator", "kd-paraphraser", "both",
        "alpha", "ktan-weight"])
def test_argument_errors(argv, message, tmp_path, capsys):
    code, err = run_cli(train_student, [*argv, "--out", tmp_path, "--iters", "4"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_fact_needs_equal_widths(tiny_runs, tmp_path, capsys):
    argv = [*tiny_runs.args(tmp_path), "--method", "fact", "--arch", "wrn_16_2", "--teacher", tiny_runs.teacher]
    code, err = run_cli(train_student, argv, capsys)
    assert code == 2 and "F-ActT (--method fact) needs student and teacher groups of equal width" in err


def test_paraphraser_script_errors(tiny_runs, tmp_path, capsys):
    code, err = run_cli(train_paraphraser, [*tiny_runs.args(tmp_path), "--teacher", tiny_runs.teacher,
                                            "--group", "3"], capsys)
    assert code == 2 and "has groups 0..2" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("method", ["ktan", "ft+kd"])
def test_resume_is_exact(method, tiny_runs, tmp_path, monkeypatch):
    """N iterations in one go == N/2, killed, then the same command again (CPU)."""
    extra = ["--paraphraser", tiny_runs.paraphraser()] if METHODS[method].paraphraser else []
    _student(tiny_runs, tmp_path / "whole", method, *extra, iters=6)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)  # stops after 3 iterations, between evaluations
        with pytest.raises(Interrupted):
            _student(tiny_runs, tmp_path / "resumed", method, *extra, iters=6)
    assert checkpoint(tmp_path / "resumed")["iteration"] == 3
    _student(tiny_runs, tmp_path / "resumed", method, *extra, iters=6)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "whole")
    a, b = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "resumed")
    for name in a["modules"]:
        assert all(torch.equal(v, b["modules"][name][k]) for k, v in a["modules"][name].items()), name
    if method == "ktan":
        for k, v in a["auxiliary"]["discriminator"].items():
            assert torch.equal(v, b["auxiliary"]["discriminator"][k]), k
        adam_a, adam_b = a["auxiliary"]["optimizer"]["state"], b["auxiliary"]["optimizer"]["state"]
        assert adam_a.keys() == adam_b.keys()
        assert all(torch.equal(adam_a[i]["exp_avg"], adam_b[i]["exp_avg"]) for i in adam_a)


def test_at_beta_decay_linear_scales_the_term_by_the_iterations_left(tiny_runs, tmp_path, monkeypatch):
    """--at-beta-decay linear: the AT term is beta x (1 - iteration / iterations) at each step
    (the loop sets it before the step); none, the default, keeps beta constant."""
    from utils.distill.at import AttentionTransfer, attention_transfer_loss

    torch.manual_seed(0)
    student, teacher = build_model("resnet20", 10), build_model("resnet20", 10).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.no_grad():
        raw = attention_transfer_loss(student(x)[1], teacher(x)[1])
    constant = AttentionTransfer(student, teacher, [(i, i) for i in range(3)], beta=1000.0)
    decayed = AttentionTransfer(student, teacher, [(i, i) for i in range(3)], beta=1000.0, beta_decay="linear")
    with torch.no_grad():
        for task in (constant, decayed):
            task.set_progress(30, 40)
        assert constant(x, y)[1]["at"].item() == pytest.approx(1000.0 * raw.item(), rel=1e-5)
        assert decayed(x, y)[1]["at"].item() == pytest.approx(1000.0 * 0.25 * raw.item(), rel=1e-5)
    # through train_student.py: the loop tells the task each step's progress, in order
    seen = []
    original = AttentionTransfer.set_progress
    monkeypatch.setattr(AttentionTransfer, "set_progress",
                        lambda self, it, n: (seen.append((it, n)), original(self, it, n))[1])
    run(train_student, [*tiny_runs.args(tmp_path / "d"), "--method", "at+kd", "--arch", "resnet20",
                        "--teacher", str(tiny_runs.teacher), "--at-beta-decay", "linear"])
    assert seen == [(i, 4) for i in range(4)]
    import json
    assert json.loads((tmp_path / "d" / "args.json").read_text())["args"]["at_beta_decay"] == "linear"
