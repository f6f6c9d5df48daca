"""Factor Transfer in Faster R-CNN on PASCAL VOC 2007 (the paper's Sec. 4.5): a VGG-16
student from a ResNet-101 teacher, FT on the backbone map that feeds the RPN and RoI head.

    metric.py      VOC 2007 mAP (11-point AP at IoU 0.5; area-under-curve AP beside it)
    data.py        VOC 2007 through torchvision's VOCDetection; batches by iteration
    synthetic.py   a small synthetic dataset in VOC's layout (tests, CPU checks)
    models.py      the two detectors from torchvision's Faster R-CNN components
    tasks.py       the stages' training tasks and the evaluation
    cli.py         the flags and settings the three scripts share
    train_teacher.py, train_paraphraser.py, train_student.py   the three stages

docs/detection.md says what was run, the choices, and the command for a GPU machine.
"""
