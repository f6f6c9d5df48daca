#!/usr/bin/env bash
# MMRazor's published Factor Transfer setting, run as its configs state it (not the
# paper's recipe; docs/mmrazor.md quotes the configs file by file):
#   configs/distill/mmcls/factor_transfer/factor-transfer_backbone_resnet50_resnet18_8xb16_cifar10_{pretrain,train}.py
# CIFAR-10, ResNet-50 teacher -> ResNet-18 student, mmcls's ResNet_CIFAR networks
# (resnet{50,18}_cifar_mmcls: mmcls's initialization, and FT's maps are the "pre_bn" tap: the
# last block's last conv output before its BN, the layer4.2.conv3 / layer4.1.conv2 MMRazor records).
#   teacher, student alone  mmcls's CIFAR-10 recipe (resnet{50,18}_8xb16_cifar10.py): 200 epochs
#                           (78,000 iterations of 128), SGD lr 0.1 momentum 0.9 wd 1e-4, lr x0.1
#                           at epochs 100 and 150, mmcls's CIFAR-10 mean/std on RGB images
#   paraphraser             k = 0.5 (2048 -> 1024 channels), no BN, 20 epochs at constant lr 0.1,
#                           wd 1e-4, MMRazor's L2Loss (unit-normalized maps, --recon-loss unit-l2),
#                           every training image (--holdout 0)
#   FT student              CE + 1.0 x FTLoss (--beta 1 --p 1), translator with BN (MMRazor's
#                           Translator default), 200 epochs as above
#   paraphraser, FT         MMRazor's data preprocessor: channels reversed, ImageNet mean/std
#                           (--norm imagenet_bgr; the teacher was trained on RGB with mmcls's
#                           CIFAR-10 constants, as MMRazor's downloaded teacher was)
# MMRazor's figures (accuracy %): teacher 95.55 / 99.91, student alone 94.82 / 99.87 (mmcls's
# checkpoints), FT 94.86 / 99.88 (top-1 / top-5).  MMRazor trained on 8 GPUs x 16 images with
# per-GPU BatchNorm: on one device BatchNorm runs over 16-image slices of each 128 batch
# (--bn-images 16, the teacher and both students; BN_IMAGES=0: over the whole batch);
# PYTHON="torchrun --nproc-per-node 8" is the other way (--batch-size is global, 16 a process).
#     bash scripts/mmrazor_r50_r18.sh ; python scripts/report.py runs --table mmrazor
# ITERS / TEACHER_ITERS / PARA_EPOCHS / PARA_ITERS scale it down (milestones stay at 50% / 75%).
source "$(dirname "$0")/lib.sh"

EPOCHS_200=78000   # 200 epochs x (50,000 // 128 = 390) iterations; milestones 39,000 / 58,500
MMCLS="--wd 1e-4 --lr 0.1 --momentum 0.9 --batch-size 128"          # mmcls's cifar10_bs128.py
BN="--bn-images ${BN_IMAGES:-16}"                                   # 8 GPUs x 16 images, per-GPU BN
T_SCHED="--iters ${TEACHER_ITERS:-$EPOCHS_200} $MMCLS $BN"
S_SCHED="--iters ${ITERS:-$EPOCHS_200} $MMCLS $BN"
P_SCHED="${PARA_SCHEDULE:---epochs 20} $MMCLS --holdout 0"         # MMRazor's pretrain: 20 epochs
RGB="--norm cifar10"          # mmcls's mean/std 125.307,122.961,113.8575 / 51.5865,50.847,51.255
MMRAZOR_DATA="--norm imagenet_bgr"
PARA="--k 0.5 --no-bn --recon-loss unit-l2"
FT_MMRAZOR="--beta 1 --p 1 --translator-bn"

D=$D10 S=resnet18_cifar_mmcls T=resnet50_cifar_mmcls
for s in $(seeds); do
  t=$D/teacher-$T-s$s p=$D/para-$T-k0.5-s$s
  run $t                        train_teacher.py --arch $T $C10 $RGB $T_SCHED --seed $s
  run $p                        train_paraphraser.py --teacher $t $PARA $C10 $MMRAZOR_DATA $P_SCHED --seed $s
  run $D/ce-$S-s$s              train_student.py --method ce --arch $S $C10 $RGB $S_SCHED --seed $s
  run $D/ft-$S-from-$T-k0.5-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p \
                                  $FT_MMRAZOR $C10 $MMRAZOR_DATA $S_SCHED --seed $s
done
schedule
