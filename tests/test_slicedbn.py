"""--bn-images: BatchNorm over 16-image slices of a 128 batch equals 8 separate 16-image
batches (MMRazor's 8 GPUs x 16 images with per-GPU BN), outputs, gradients and running
statistics (rank 0's, which DistributedDataParallel broadcasts)."""
import copy

import pytest
import torch
import torch.nn as nn

from utils.slicedbn import SlicedBatchNorm2d, slice_batchnorm


def test_sliced_statistics_equal_eight_separate_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    nn.init.uniform_(bn.weight)
    nn.init.normal_(bn.bias)
    copies = [copy.deepcopy(bn) for _ in range(8)]
    sliced = slice_batchnorm(nn.Sequential(copy.deepcopy(bn)), 16)[0]
    assert isinstance(sliced, SlicedBatchNorm2d)
    x = torch.randn(128, 5, 4, 4) * 3 + 1
    x.requires_grad_(True)
    y = sliced(x)
    parts = [c(x[16 * i:16 * (i + 1)]) for i, c in enumerate(copies)]
    torch.testing.assert_close(y, torch.cat(parts), rtol=1e-5, atol=1e-5)
    # a whole-batch BN differs: the slices' statistics are not the batch's
    assert not torch.allclose(y, copy.deepcopy(bn)(x), atol=1e-3)
    # gradients: the loss over 128 images, as the mean over ranks of each rank's loss
    w = torch.randn_like(y)
    (y * w).sum().backward()
    gx = x.grad.clone()
    x.grad = None
    sum((p * w[16 * i:16 * (i + 1)]).sum() for i, p in enumerate(parts)).backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sliced.weight.grad, sum(c.weight.grad for c in copies), rtol=1e-4, atol=1e-5)
    # running statistics: rank 0's
    torch.testing.assert_close(sliced.running_mean, copies[0].running_mean)
    torch.testing.assert_close(sliced.running_var, copies[0].running_var)
    assert int(sliced.num_batches_tracked) == 1
    # evaluation uses the running statistics, as nn.BatchNorm2d
    sliced.eval(), copies[0].eval()
    torch.testing.assert_close(sliced(x[:7]), copies[0](x[:7]))


def test_a_batch_that_does_not_split_is_refused():
    bn = slice_batchnorm(nn.Sequential(nn.BatchNorm2d(2)), 16)[0]
    with pytest.raises(ValueError, match="slices of 16"):
        bn(torch.randn(40, 2, 2, 2))


def test_student_script_slices_every_trained_batchnorm(tiny_args, tmp_path, monkeypatch):
    """--bn-images reaches the student and its translator; evaluation is unchanged in kind."""
    import train_student
    from helpers import run
    import utils.train

    seen = {}
    real_fit = utils.train.fit

    def spy(stage, data, run_dir, args):
        seen["bns"] = [m for module in stage.trainable.values() for m in module.modules()
                       if isinstance(m, nn.BatchNorm2d)]
        return real_fit(stage, data, run_dir, args)

    monkeypatch.setattr(train_student, "fit", spy)
    run(train_student, [*tiny_args(tmp_path / "s"), "--method", "ce", "--arch", "resnet20", "--bn-images", "8"])
    assert seen["bns"] and all(isinstance(m, SlicedBatchNorm2d) and m.images == 8 for m in seen["bns"])


def test_bn_images_must_divide_the_batch(tiny_args, tmp_path, capsys):
    import train_teacher
    from helpers import run_cli

    code, err = run_cli(train_teacher, [*tiny_args(tmp_path / "t"), "--arch", "resnet20", "--bn-images", "5"], capsys)
    assert code == 2 and "--bn-images 5 must be 0 or divide --batch-size 16" in err
