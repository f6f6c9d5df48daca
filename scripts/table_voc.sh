#!/usr/bin/env bash
# PASCAL VOC 2007 detection (the paper's Sec. 4.5): Faster R-CNN with a VGG-16 student alone and
# with Factor Transfer from a ResNet-101 teacher, mAP on VOC 2007 test (paper: 69.5, 70.3, 75.0).
# Both networks start from torchvision's ImageNet weights and are fine-tuned on trainval; FT acts
# on the backbone map (beta 1000, k 0.5, paraphraser without BN: the paper's ImageNet / VOC rule).
#     VOC_ROOT=./data WEIGHTS=./weights GPUS="0 1" scripts/table_voc.sh
#     python scripts/report_voc.py runs/voc2007
#
# Settings: scripts/lib.sh's (SEEDS defaults to 1 here: the paper reports one run; ITERS: student
# iterations, default 70,000 with the lr drop at 5/7 of them; TEACHER_ITERS: the teacher's, default
# ITERS; PARA_ITERS / PARA_EPOCHS: the paraphraser's, default one epoch), and
#   VOC_ROOT=./data        holds VOCdevkit/VOC2007 (JPEGImages, Annotations, ImageSets/Main)
#   DOWNLOAD=0             1: let torchvision download VOC 2007 into VOC_ROOT (needs internet)
#   WEIGHTS=./weights      holds torchvision's vgg16-397923af.pth and resnet101-63fe2227.pth
#   PRETRAINED=1           0: random initialisation (no ImageNet weights; not the paper's setting)
#   TEACHER_ARCH=resnet101, STUDENT_ARCH=vgg16   (the *_tiny networks for a quick check)
#   DETECTOR_ARGS          added to every teacher and student command (e.g. "--min-size 96")
SEEDS=${SEEDS:-1}
source "$(dirname "$0")/lib.sh"

VOC_ROOT=${VOC_ROOT:-./data}
DOWNLOAD=${DOWNLOAD:-0}
WEIGHTS=${WEIGHTS:-./weights}
PRETRAINED=${PRETRAINED:-1}
TEACHER_ARCH=${TEACHER_ARCH:-resnet101}
STUDENT_ARCH=${STUDENT_ARCH:-vgg16}
DETECTOR_ARGS=${DETECTOR_ARGS:-}

[[ $DOWNLOAD == 0 || $DOWNLOAD == 1 ]] || die "DOWNLOAD must be 0 or 1"
[[ $PRETRAINED == 0 || $PRETRAINED == 1 ]] || die "PRETRAINED must be 0 or 1"
for _path in "$VOC_ROOT" "$WEIGHTS"; do
  [[ $_path != *[[:space:]]* ]] || die "paths with spaces are not supported: '$_path'"
done
declare -A FILE=([vgg16]=vgg16-397923af.pth [resnet101]=resnet101-63fe2227.pth)
pretrained() {  # arch -> its --pretrained flag
  if [[ $PRETRAINED == 1 ]]; then
    [[ -n ${FILE[$1]:-} ]] || die "no ImageNet weights for $1; set PRETRAINED=0"
    echo "--pretrained $WEIGHTS/${FILE[$1]}"
  fi
}

VOC="--data-root $VOC_ROOT${TRAIN_SUBSET:+ --train-subset $TRAIN_SUBSET}${TEST_SUBSET:+ --test-subset $TEST_SUBSET}"
if [[ $DOWNLOAD == 1 ]]; then VOC+=" --download"; fi
FT_VOC="--beta 1000 --p 1"  # Sec. 4.5: beta 1000 "in ImageNet and PASCAL VOC 2007"

D=$RUNS/voc2007
T=$TEACHER_ARCH S=$STUDENT_ARCH
for s in $(seeds); do
  t=$D/teacher-$T-s$s p=$D/para-$T-k0.5-s$s
  run $t                        detection/train_teacher.py --arch $T $(pretrained $T) $DETECTOR_ARGS $VOC $TEACHER_SCHEDULE --seed $s
  run $p                        detection/train_paraphraser.py --teacher $t --k 0.5 --no-bn $VOC $PARA_SCHEDULE --seed $s
  run $D/ce-$S-s$s              detection/train_student.py --method ce --arch $S $(pretrained $S) $DETECTOR_ARGS $VOC $STUDENT_SCHEDULE --seed $s
  run $D/ft-$S-from-$T-k0.5-s$s detection/train_student.py --method ft --arch $S $(pretrained $S) --teacher $t --paraphraser $p $FT_VOC $DETECTOR_ARGS $VOC $STUDENT_SCHEDULE --seed $s
done
schedule
