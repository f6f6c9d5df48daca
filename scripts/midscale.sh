#!/usr/bin/env bash
# Table 1's ResNet-56 -> ResNet-20 row at mid scale, with the shipped teacher and
# paraphraser (results/shipped/): ResNet-20 students alone, KD, AT and FT (k = 0.5) at
# 4,000 iterations (lr x0.1 at 50% / 75%), every seed with the same teacher, so that the
# report pairs FT with each baseline seed by seed.  On the CIFAR-10 JPEG copy the shipped
# teacher was trained on; on torchvision's CIFAR-10 it teaches with --teacher-data-copy.
#     DATASET=folder DATA_ROOT=../shared/data/cifar10-jpeg.tar.gz RUNS=runs_mid bash scripts/midscale.sh
#     python scripts/report.py runs_mid results/shipped/teacher-resnet56 --table 1   # with the teacher's run
# Settings as every table script (scripts/lib.sh); here ITERS defaults to 4000, SEEDS to 3,
# and TEACHER_RUN / PARA_RUN name other teacher and paraphraser folders.
ITERS=${ITERS:-4000} TEACHER_ITERS=${TEACHER_ITERS:-16000}  # the latter: the shipped teacher's, trained elsewhere
source "$(dirname "$0")/lib.sh"

t=${TEACHER_RUN:-results/shipped/teacher-resnet56}
p=${PARA_RUN:-results/shipped/para-resnet56-k0.5}
[[ -f $t/final.json && -f $p/final.json ]] ||
  die "the teacher ($t) and paraphraser ($p) must be finished runs (results/shipped/, or TEACHER_RUN / PARA_RUN)"
COPY=""
if [[ $DATASET == cifar10 ]]; then COPY="--teacher-data-copy"; fi

D=$D10 S=resnet20 T=resnet56
for s in $(seeds); do
  run $D/ce-$S-s$s            train_student.py --method ce --arch $S $C10 $STUDENT_SCHEDULE --seed $s
  run $D/kd-$S-from-$T-s$s    train_student.py --method kd --arch $S --teacher $t $COPY $KD $C10 $STUDENT_SCHEDULE --seed $s
  run $D/at-$S-from-$T-s$s    train_student.py --method at --arch $S --teacher $t $COPY $AT $C10 $STUDENT_SCHEDULE --seed $s
  run $D/ft-$S-from-$T-k0.5-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p $COPY $FT $C10 $STUDENT_SCHEDULE --seed $s
done
schedule
