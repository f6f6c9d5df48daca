"""The translator: the student's side of Factor Transfer (paper Sec. 3.2).

Three conv layers shaped like the paraphraser's encoder, sitting right after the
student's last group:  C_s -> C_s,  C_s -> kC_t,  kC_t -> kC_t  (3x3, stride 1,
padding 1, bias, optional BN, LeakyReLU(0.1)).  Its output is the *student
factor* F_S, trained jointly with the student to match the teacher factor.  It is
used in training only; the deployed student does not include it.

It keeps three layers when the paraphraser has fewer (Table 4's depth ablation
varies the paraphraser only); `train_student.py --translator-layers 1|2` gives
C_s -> kC_t or C_s -> C_s -> kC_t.  For the CAE paraphraser it has as many
stride-2 convs as the encoder, so that the two factors have the same size.
"""

from __future__ import annotations

from paraphraser import ConvEncoder


def translator_widths(student_channels: int, factor_channels: int, layers: int = 3,
                      kind: str = "conv") -> list[int]:
    """Widths along the translator, input first (mirrors `paraphraser.encoder_widths`)."""
    if kind == "cae":
        # Same strides as the CAE encoder; the last layer lands on the factor's channels.
        mids = [student_channels * 2 ** i for i in range(1, layers)]
        return [student_channels, *mids, factor_channels]
    return {1: [student_channels, factor_channels],
            2: [student_channels, student_channels, factor_channels],
            3: [student_channels, student_channels, factor_channels, factor_channels]}[layers]


class Translator(ConvEncoder):
    """Student feature map -> student factor F_S."""

    def __init__(self, student_channels: int, factor_channels: int, bn: bool = True,
                 layers: int = 3, kind: str = "conv"):
        stride = 2 if kind == "cae" else 1
        super().__init__(translator_widths(student_channels, factor_channels, layers, kind), bn, stride)
        self.config = dict(student_channels=student_channels, factor_channels=factor_channels,
                           bn=bn, layers=layers, kind=kind)
