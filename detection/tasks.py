"""The three stages' training tasks for detection (`utils.train.fit`'s protocol: forward
(images, targets) -> (None, {loss name: scalar}); frozen parts in eval mode, no gradient),
and the VOC 2007 evaluation.

    DetectorTraining     stage 1 (teacher) and the student alone: Faster R-CNN's four losses
    BackboneTap          a frozen detector as the paraphraser stage sees it: its backbone map
                         (the last shared conv layer, Sec. 4.5), so that stage 2 is
                         utils.distill.paraphrase.ParaphraserTraining unchanged
    DetectionFT          stage 3: the four losses + beta * L_FT (Eq. 2-3) between the student's
                         translated backbone map and the paraphrased teacher map, both of the
                         same resized batch
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detection.metric import Detections, voc_ap
from detection.models import backbone_features, detection_losses
from utils.distill.base import Task
from utils.distill.ft import Link, factor_transfer_loss


class DetectorTraining(Task):
    """Faster R-CNN alone: RPN objectness + box regression, RoI head classification + box
    regression (Ren et al. 2015, Eq. 1, the four terms summed with weight 1 as py-faster-rcnn)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        feature, batch, targets = backbone_features(self.model, images, targets)
        return None, detection_losses(self.model, feature, batch, targets)


class BackboneTap(nn.Module):
    """A frozen detector's backbone map of a list of images, as a classifier's (logits, feats):
    (None, [map]).  Images are resized and normalised by the detector's own transform (in
    eval mode: the test scale)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        feature, _, _ = backbone_features(self.detector, images)
        return None, [feature]


class DetectionFT(Task):
    """Factor Transfer on the backbone map (Sec. 4.5): detection losses + beta * L_FT.

    The teacher's backbone runs on the student's resized, normalised batch (both networks
    take torchvision's ImageNet normalisation), so the two maps cover the same pixels at the
    same stride (16) and size.  The teacher and the paraphraser are frozen; the translator
    is trained with the student and saved beside it, not part of the deployed detector.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, paraphraser: nn.Module,
                 translator: nn.Module, beta: float = 1000.0, p: int = 1, reduction: str = "mean"):
        super().__init__()
        self.student = student
        self.translator = translator
        self.add_frozen("teacher", teacher)
        self.add_frozen("paraphraser", paraphraser)
        self.link = Link(translator, paraphraser)
        self.beta, self.p, self.reduction = beta, p, reduction

    def forward(self, images, targets):
        feature_s, batch, targets = backbone_features(self.student, images, targets)
        losses = detection_losses(self.student, feature_s, batch, targets)
        with torch.no_grad():
            feature_t = self.teacher.backbone(batch.tensors)
        factor_s, factor_t = self.link.factors([feature_s], [feature_t])
        losses["ft"] = self.beta * factor_transfer_loss(factor_s, factor_t, self.p, self.reduction)
        return None, losses


@torch.inference_mode()
def voc_evaluate(model: nn.Module, data, batch_size: int = 1, class_names=None) -> dict:
    """VOC 2007 mAP (%) of `model` on `data.test_batches`: "map" (11-point, the paper's),
    "map_area" (area under the curve) and "ap_<class>" (11-point, per class)."""
    was_training = model.training
    model.eval()
    detections, truths = [], []
    for images, annotated in data.test_batches(batch_size):
        for out, a in zip(model(images), annotated):
            detections.append(Detections(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                                         out["labels"].cpu().numpy()))
            truths.append(a.truth())
    model.train(was_training)
    labels = list(range(1, data.num_classes))
    result = voc_ap(detections, truths, labels)
    metrics = {"map": 100 * result["map"], "map_area": 100 * result["map_area"]}
    for label in labels:
        name = class_names[label - 1] if class_names else str(label)
        if not math.isnan(result["ap"][label]):  # classes without a test object have no AP
            metrics[f"ap_{name}"] = 100 * result["ap"][label]
    return metrics
